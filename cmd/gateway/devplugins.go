package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/storegate/storegate/config"
)

// devPlugins configures the example plugins found in dir (bin/plugins by
// default, built by make plugins): values under /app/config/ must be JSON
// objects with a name (schema), values under /app/private/ are stored
// encrypted (encrypt, with a key generated once into the dev directory),
// every KV write is held to a size and a key charset (limits, in C), and
// service registrations to a name pattern and an owner (registration).
// Missing modules are left out, with what is missing returned.
func (d *devSetup) devPlugins(dir string) ([]config.PluginConfig, []string, error) {
	keyFile := filepath.Join(d.dir, "encrypt.key")
	key, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		rand.Read(key)
		err = os.WriteFile(keyFile, key, 0o600)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dev encrypt key: %w", err)
	}
	all := []config.PluginConfig{
		{Name: "limits", Path: "limits.wasm",
			Match:  config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}},
			Config: map[string]any{"max_value_bytes": 512 << 10, "key_charset": "a-zA-Z0-9/_.-"}},
		{Name: "encrypt", Path: "encrypt.wasm",
			Match:  config.PluginMatch{Resources: []string{"kv", "watch"}, Keys: []string{"/app/private/**"}},
			Config: map[string]any{"key_base64": base64.StdEncoding.EncodeToString(key), "prefixes": []string{"/app/private/"}}},
		{Name: "schema", Path: "schema.wasm",
			Match: config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}, Keys: []string{"/app/config/**"}},
			Config: map[string]any{"rules": []any{map[string]any{"prefix": "/app/config/",
				"schema": map[string]any{"type": "object", "required": []string{"name"},
					"properties": map[string]any{"name": map[string]any{"type": "string"}}}}}}},
		{Name: "registration", Path: "registration.wasm",
			Match:  config.PluginMatch{Resources: []string{"service"}, Actions: []string{"register"}},
			Config: map[string]any{"name_pattern": "^[a-z][a-z0-9-]*$"}},
	}
	var found []config.PluginConfig
	var missing []string
	for _, p := range all {
		p.Path = filepath.Join(dir, p.Path)
		if _, err := os.Stat(p.Path); err != nil {
			missing = append(missing, p.Path)
			continue
		}
		found = append(found, p)
	}
	return found, missing, nil
}
