package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// config is the plugin's configuration:
// {"key_base64":"<32 bytes, standard base64>","prefixes":["/secret/"]}.
type config struct {
	KeyBase64 string   `json:"key_base64"`
	Prefixes  []string `json:"prefixes"`
}

// Per-instance state set once by configure.
var (
	aead     cipher.AEAD // AES-256-GCM drawing a random 96-bit nonce per seal
	prefixes [][]byte    // keys under these hold encrypted values
)

// configure is the plugin's Init: it checks the key's size and builds the
// cipher, so that a bad key refuses the plugin at load.
func configure(raw []byte) error {
	var cfg config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("encrypt: config: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(cfg.KeyBase64)
	if err != nil {
		return fmt.Errorf("encrypt: config: key_base64: %w", err)
	}
	if len(key) != 32 {
		return fmt.Errorf("encrypt: config: key_base64 holds %d bytes, want 32 (AES-256)", len(key))
	}
	if len(cfg.Prefixes) == 0 {
		return errors.New("encrypt: config: no prefixes")
	}
	ps := make([][]byte, len(cfg.Prefixes))
	for i, p := range cfg.Prefixes {
		if p == "" {
			return fmt.Errorf("encrypt: config: prefix %d is empty (\"/\" selects every key)", i)
		}
		ps[i] = []byte(p)
	}
	a, err := newAEAD(key)
	if err != nil {
		return err
	}
	aead, prefixes = a, ps
	return nil
}

// newAEAD returns AES-256-GCM with a random nonce drawn from crypto/rand
// (WASI random_get in the guest) on every seal and prepended to the
// ciphertext.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return cipher.NewGCMWithRandomNonce(block)
}
