package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// config is the plugin's configuration: {"root":"/tenants"}.
type config struct {
	Root *string `json:"root"`
}

// defaultRoot is the root of every tenant's key space when none is set.
const defaultRoot = "/tenants"

// root is the configured root, without a trailing "/" ("" puts tenants at
// the top: /<tenant>/...).
var root = []byte(defaultRoot)

// configure is the plugin's Init: it reads the root, which must start
// with "/" (Consul keys keep their leading "/", ABI.md) unless empty.
func configure(raw []byte) error {
	var cfg config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("namespace: config: %w", err)
	}
	r := defaultRoot
	if cfg.Root != nil {
		r = strings.TrimRight(*cfg.Root, "/")
	}
	if r != "" && r[0] != '/' {
		return fmt.Errorf("namespace: config: root %q must start with \"/\"", r)
	}
	root = []byte(r)
	return nil
}
