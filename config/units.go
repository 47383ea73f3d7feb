package config

import (
	"fmt"
	"math"
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
	if err != nil || n.Kind != yaml.ScalarNode {
		return lineError(n, "%q is not a duration (such as 500ms, 5s, 1m30s)", n.Value)
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
	if err != nil || v < 0 || n.Kind != yaml.ScalarNode || v > math.MaxInt64/mult {
		return lineError(n, "%q is not a size (bytes, or with KiB, MiB, GiB)", n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

// MarshalYAML writes the duration as Go writes it ("1m30s").
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalYAML writes the size as a number of bytes.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }

// lineError reports a bad value at its line as a *yaml.TypeError: yaml.v3
// collects those and goes on decoding, so every problem of a file is
// reported at once.
func lineError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

// decodeEnum parses a scalar node with parse, reporting a bad value with
// lineError.
func decodeEnum[T any](n *yaml.Node, what, want string, parse func(string) (T, error)) (T, error) {
	v, err := parse(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		var zero T
		return zero, lineError(n, "%s %q is not %s", what, n.Value, want)
	}
	return v, nil
}
