package policy

import "testing"

func TestParseMode(t *testing.T) {
	tests := []struct {
		in   string
		want Mode
		err  bool
	}{
		{"", ModeEnforce, false},
		{"enforce", ModeEnforce, false},
		{"shadow", ModeShadow, false},
		{"Shadow", 0, true},
		{"audit", 0, true},
	}
	for _, tt := range tests {
		m, err := ParseMode(tt.in)
		if (err != nil) != tt.err || m != tt.want {
			t.Errorf("ParseMode(%q) = %v, %v", tt.in, m, err)
		}
		var u Mode
		if err := u.UnmarshalText([]byte(tt.in)); (err != nil) != tt.err || u != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v", tt.in, u, err)
		}
		if !tt.err && tt.in != "" {
			if b, _ := m.MarshalText(); string(b) != tt.in {
				t.Errorf("MarshalText = %s", b)
			}
		}
	}
}
