package mtls

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ParsePrivateKey reads the first private key of a PEM file in any form
// etcd and Consul read: PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY")
// or SEC1 ("EC PRIVATE KEY"). Other blocks before it are skipped, such as
// the "EC PARAMETERS" block `openssl ecparam -genkey` writes first, or a
// certificate in a combined file. An encrypted key is refused with an error
// that says how to decrypt it: the gateway starts unattended, with no one to
// type a passphrase.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New(`no private key found: want a PEM block "PRIVATE KEY" (PKCS#8), ` +
				`"RSA PRIVATE KEY" (PKCS#1) or "EC PRIVATE KEY" (SEC1)`)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "ENCRYPTED PRIVATE KEY":
			return nil, errEncrypted
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY", "EC PRIVATE KEY":
			// OpenSSL's legacy encryption (genrsa -aes256) is a DEK-Info
			// header on the block.
			if _, ok := block.Headers["DEK-Info"]; ok {
				return nil, errEncrypted
			}
			if block.Type == "RSA PRIVATE KEY" {
				key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
			} else {
				key, err = x509.ParseECPrivateKey(block.Bytes)
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key of type %T cannot sign", key)
		}
		return signer, nil
	}
}

var errEncrypted = errors.New("the private key is encrypted, and the gateway reads unencrypted keys only " +
	"(it starts with no one to type a passphrase): decrypt it into a file of mode 0600 with " +
	"`openssl pkey -in KEY -out KEY.plain`")

// pkcs8PEM reads a key, in any form ParsePrivateKey reads, and
// returns it as a PKCS#8 PEM block, the one form crypto/tls and go-spiffe's
// parsers take alike.
func pkcs8PEM(keyPEM []byte) ([]byte, error) {
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	return pemKey(key)
}

// LoadKeyPair reads a certificate chain (the leaf first) and its private key
// in any form ParsePrivateKey reads, and checks that they belong together.
// It is the one loader of client certificate files (upstreams' tls.cert and
// tls.key); the identity files go through the same key parser.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mtls: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mtls: %w", err)
	}
	norm, err := pkcs8PEM(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mtls: client key %s: %w", keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, norm)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mtls: client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return pair, nil
}
