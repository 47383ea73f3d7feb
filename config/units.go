package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "20ms", "5s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration: %v", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size written as a number of bytes or with KiB/MiB/GiB.
type ByteSize int64

// UnmarshalYAML parses "1048576", "512KiB", "2MiB".
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a size (bytes, or with KiB, MiB, GiB)", n.Line, n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

// MarshalYAML writes the duration as Go writes it ("1m30s").
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalYAML writes the size as a number of bytes.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }
