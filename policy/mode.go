package policy

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Mode says what the engine does with a decision.
type Mode uint8

// Modes.
const (
	// ModeEnforce returns decisions as the policy made them.
	ModeEnforce Mode = iota
	// ModeShadow lets every op through: a deny (or filter) comes back as
	// Allow with Shadow set and the policy's reason, for the gate to log.
	// Evaluation errors are shadowed too.
	ModeShadow
)

func (m Mode) String() string {
	switch m {
	case ModeEnforce:
		return "enforce"
	case ModeShadow:
		return "shadow"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "enforce" (or "", the default) or "shadow".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "enforce":
		return ModeEnforce, nil
	case "shadow":
		return ModeShadow, nil
	}
	return 0, fmt.Errorf("policy: unknown mode %q (want enforce or shadow)", s)
}

// UnmarshalText lets a Mode be decoded from configuration.
func (m *Mode) UnmarshalText(b []byte) error {
	mode, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = mode
	return nil
}

// UnmarshalYAML parses a mode from configuration; a bad value is reported
// with its line as a *yaml.TypeError, so decoding goes on and every problem
// of the file is reported at once.
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	mode, err := ParseMode(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: mode %q is not enforce or shadow", n.Line, n.Value)}}
	}
	*m = mode
	return nil
}

// MarshalText spells the mode as ParseMode reads it.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }
