package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// config is the plugin's configuration:
// {"name_pattern":"^[a-z][a-z0-9-]*$","owner":"last-segment"}.
type config struct {
	NamePattern *string `json:"name_pattern"`
	Owner       string  `json:"owner"`
}

// Owner modes: what Meta.owner must equal.
const (
	ownerLastSegment = "last-segment" // the caller's SPIFFE ID's last path segment (default)
	ownerSPIFFEID    = "spiffe-id"    // the caller's whole SPIFFE ID
)

// defaultPattern is the service name pattern when none is set: a DNS
// label in lower case, as Consul's DNS interface prefers.
const defaultPattern = `^[a-z][a-z0-9-]*$`

// Per-instance settings, set once by configure.
var (
	namePattern = regexp.MustCompile(defaultPattern)
	ownerMode   = ownerLastSegment
)

// configure is the plugin's Init: it compiles the name pattern (Go regexp
// syntax, matched anywhere unless anchored: keep the ^ and $) and checks
// the owner mode.
func configure(raw []byte) error {
	var cfg config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("registration: config: %w", err)
	}
	pattern := defaultPattern
	if cfg.NamePattern != nil {
		pattern = *cfg.NamePattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return fmt.Errorf("registration: config: name_pattern: %w", err)
	}
	mode := ownerLastSegment
	switch cfg.Owner {
	case "", ownerLastSegment:
	case ownerSPIFFEID:
		mode = ownerSPIFFEID
	default:
		return fmt.Errorf("registration: config: owner %q: want %q or %q", cfg.Owner, ownerLastSegment, ownerSPIFFEID)
	}
	namePattern, ownerMode = re, mode
	return nil
}
