package main

import (
	"strings"
	"testing"

	"github.com/storegate/storegate/plugins/sdk"
)

// testConfig has two rules, one nested in the other's prefix, so that a
// key under both must satisfy both.
const testConfig = `{"rules":[
	{"prefix":"/config/","schema":{"type":"object","required":["name"],
		"properties":{"name":{"type":"string"},"port":{"type":"integer","minimum":1,"maximum":65535}}}},
	{"prefix":"/config/strict/","schema":{"type":"object","additionalProperties":false,
		"properties":{"name":{"type":"string"}}}}
]}`

// write is a KV write op of value at key.
func write(key, value string) *sdk.Op {
	return &sdk.Op{Protocol: sdk.ProtocolEtcd, Resource: sdk.ResourceKV, Action: sdk.ActionWrite,
		Flags: sdk.FlagValue, Key: []byte(key), Value: []byte(value)}
}

// TestValidate checks accepted values, schema violations and non-JSON.
func TestValidate(t *testing.T) {
	if err := configure([]byte(testConfig)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		op   *sdk.Op
		deny string // "" : continue
	}{
		{"valid", write("/config/a", `{"name":"a","port":80}`), ""},
		{"outside prefixes", write("/other/a", `not json`), ""},
		{"missing property", write("/config/a", `{"port":80}`),
			`value does not match the schema for "/config/": at '': missing property 'name'`},
		{"wrong type", write("/config/a", `{"name":"a","port":"80"}`),
			`value does not match the schema for "/config/": at '/port': got string, want integer`},
		{"out of range", write("/config/a", `{"name":"a","port":70000}`),
			`value does not match the schema for "/config/": at '/port': maximum: got 70,000, want 65,535`},
		{"nested rule", write("/config/strict/a", `{"name":"a","port":1}`),
			`value does not match the schema for "/config/strict/": at '': additional properties 'port' not allowed`},
		{"not JSON", write("/config/a", `{"name":`), "value is not JSON: unexpected EOF"},
		{"trailing data", write("/config/a", `{"name":"a"} x`), "value is not JSON: invalid character after top-level value"},
		{"consul write", &sdk.Op{Protocol: sdk.ProtocolConsul, Resource: sdk.ResourceKV, Action: sdk.ActionWrite,
			Flags: sdk.FlagValue, Key: []byte("/config/a"), Value: []byte(`[]`)},
			`value does not match the schema for "/config/": at '': got array, want object`},
		{"read", &sdk.Op{Resource: sdk.ResourceKV, Action: sdk.ActionRead, Key: []byte("/config/a")}, ""},
		{"delete", &sdk.Op{Resource: sdk.ResourceKV, Action: sdk.ActionDelete, Key: []byte("/config/a")}, ""},
	}
	for _, c := range cases {
		r := onRequest(c.op)
		switch {
		case c.deny == "" && r.Verdict() != sdk.VerdictContinue:
			t.Errorf("%s: got verdict %d (%s), want continue", c.name, r.Verdict(), r.Reason())
		case c.deny != "" && (r.Verdict() != sdk.VerdictDeny || r.Reason() != c.deny):
			t.Errorf("%s: got verdict %d reason %q, want deny %q", c.name, r.Verdict(), r.Reason(), c.deny)
		}
	}
}

// TestConfigErrors checks that bad configurations refuse the plugin.
func TestConfigErrors(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"rule":[]}`:                                      "unknown field",
		`{"rules":[{"prefix":"","schema":{}}]}`:            "prefix is empty",
		`{"rules":[{"prefix":"/a/"}]}`:                     "no schema",
		`{"rules":[{"prefix":"/a/","schema":{"type":1}}]}`: "rule 0 (/a/)",
		`{"rules":[{"prefix":"/a/","schema":{"$ref":"https://example.org/s.json"}}]}`: "not loaded",
		`not json`: "config",
	} {
		if _, err := parseConfig([]byte(cfg)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", cfg, err, want)
		}
	}
	if r, err := parseConfig([]byte(`{}`)); err != nil || len(r) != 0 {
		t.Errorf("empty config: %v %v", r, err)
	}
}
