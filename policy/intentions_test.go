package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestParseIntentionsRejects(t *testing.T) {
	const head = "intentions:\n  - name: web\n    source: \"spiffe://example.org/web\"\n"
	tests := []struct {
		name string
		src  string
		want []string // each a line of the joined error
	}{
		{"not a mapping", "- a\n", []string{`f.yaml:1: want a mapping with the key "intentions"`}},
		{"unknown top-level field", "intentions: []\npolicies: []\n", []string{`f.yaml:2: unknown field "policies"`}},
		{"intentions not a list", "intentions: {}\n", []string{"f.yaml:1: intentions: want a list"}},
		{"entry not a mapping", "intentions:\n  - web\n", []string{"f.yaml:2: intention: want a mapping"}},
		{"missing fields", "intentions:\n  - name: web\n", []string{
			`f.yaml:2: intention "web": source is required`,
			`f.yaml:2: intention "web": resources is required (use ["*"] for any)`,
			`f.yaml:2: intention "web": actions is required (use ["*"] for any)`,
			`f.yaml:2: intention "web": effect is required`,
		}},
		{"unknown names", head + "    resources: [kv, kvv]\n    actions: [read, raed]\n    effect: allow\n", []string{
			`f.yaml:4: intention "web": resources: "kvv" is not a known name`,
			`f.yaml:5: intention "web": actions: "raed" is not a known name`,
		}},
		{"star not alone", head + "    resources: [kv, \"*\"]\n    actions: [\"*\"]\n    effect: allow\n", []string{
			`f.yaml:4: intention "web": resources: "*" must stand alone`,
		}},
		{"empty list", head + "    resources: []\n    actions: [\"*\"]\n    effect: allow\n", []string{
			`f.yaml:4: intention "web": resources: want a non-empty list (quote a lone "*")`,
		}},
		{"bad effect", head + "    resources: [kv]\n    actions: [read]\n    effect: permit\n", []string{
			`f.yaml:6: intention "web": effect must be allow or deny, not "permit"`,
		}},
		{"keys and services", head + "    resources: [kv]\n    actions: [read]\n    keys: [\"/a/**\"]\n    services: [web]\n    effect: allow\n", []string{
			`f.yaml:7: intention "web": keys and services cannot be combined: an op names one or the other`,
		}},
		{"bad globs", head + "    resources: [kv]\n    actions: [read]\n    keys: [\"/a/***\", \"\"]\n    effect: allow\n", []string{
			`f.yaml:6: intention "web": keys: use "*" for one segment or "**" for any, not "***"`,
			`f.yaml:6: intention "web": keys: want a non-empty string`,
		}},
		{"bad source", "intentions:\n  - name: web\n    source: web\n    resources: [kv]\n    actions: [read]\n    effect: allow\n", []string{
			`f.yaml:3: intention "web": source: want a SPIFFE ID glob`,
		}},
		{"bad owners", head + "    resources: [lease]\n    actions: [read]\n    owners: [web, \"*\", \"spiffe://example.org/***\"]\n    effect: allow\n", []string{
			`f.yaml:6: intention "web": owners: want a SPIFFE ID glob such as "spiffe://example.org/web" or "spiffe://example.org/**", or "**" for any owner`,
			`f.yaml:6: intention "web": owners: use "*" for one segment or "**" for any, not "***"`,
		}},
		{"empty owners", head + "    resources: [lease]\n    actions: [read]\n    owners: []\n    effect: allow\n", []string{
			`f.yaml:6: intention "web": owners: want a non-empty list (quote a lone "*")`,
		}},
		{"bad endpoints", head + "    resources: [service]\n    actions: [register]\n    addresses: [\"10.0.0.1\", \"10.0.0.0/33:80\", \"h:0\", \":80\"]\n" +
			"    check_targets: [\"a:b\"]\n    effect: allow\n", []string{
			`f.yaml:6: intention "web": addresses: "10.0.0.1": want HOST:PORT (PORT may be "*")`,
			`f.yaml:6: intention "web": addresses: "10.0.0.0/33:80": netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`,
			`f.yaml:6: intention "web": addresses: "h:0": the port must be 1-65535 or "*"`,
			`f.yaml:6: intention "web": addresses: ":80": the host is empty`,
			`f.yaml:7: intention "web": check_targets: "a:b": the port must be 1-65535 or "*"`,
		}},
		{"keys and endpoints", head + "    resources: [kv]\n    actions: [read]\n    keys: [\"/a/**\"]\n    check_targets: [\"*:*\"]\n    effect: allow\n", []string{
			`f.yaml:6: intention "web": keys cannot be combined with addresses or check_targets, which are about services`,
		}},
		{"bad name", strings.Replace(head, "name: web", "name: web app", 1) + "    resources: [kv]\n    actions: [read]\n    effect: allow\n", []string{
			`f.yaml:2: intention "web app": a name may hold only letters, digits and . _ -`,
		}},
		{"duplicate name", head + "    resources: [kv]\n    actions: [read]\n    effect: allow\n" +
			"  - name: web\n    source: \"**\"\n    resources: [kv]\n    actions: [read]\n    effect: deny\n", []string{
			`f.yaml:7: intention "web": duplicate name (first at line 2)`,
		}},
		{"duplicate field", head + "    source: \"**\"\n    resources: [kv]\n    actions: [read]\n    effect: allow\n", []string{
			`f.yaml:4: duplicate field "source"`,
		}},
		{"alias for a star", head + "    resources: [*]\n", []string{"f.yaml: yaml: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseIntentions("f.yaml", []byte(tt.src))
			if err == nil {
				t.Fatal("parsed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), "policy: "+w) {
					t.Errorf("error\n%s\nlacks\npolicy: %s", err, w)
				}
			}
		})
	}
}

func TestParseIntentions(t *testing.T) {
	src := `# comment
intentions:
  - name: any
    description: anything goes
    source: "**"
    resources: ["*"]
    actions: ["*"]
    effect: allow
  - name: some
    source: "spiffe://example.org/*"
    resources: [watch, kv, kv]
    actions: [read]
    keys: ["/a/**", "/b"]
    owners: ["**", "spiffe://example.org/team/*"]
    effect: deny
`
	ins, err := parseIntentions("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 2 {
		t.Fatalf("got %d intentions", len(ins))
	}
	first, second := ins[0], ins[1]
	if first.name != "any" || first.resources != nil || first.actions != nil || first.keys != nil || first.deny || first.line != 3 {
		t.Errorf("first = %+v", first)
	}
	if first.owners != nil {
		t.Errorf("first has owners %q", first.owners)
	}
	if !slices.Equal(second.resources, []string{"kv", "watch"}) || !second.deny || len(second.keys) != 2 || second.line != 9 ||
		!slices.Equal(second.owners, []string{"**", "spiffe://example.org/team/*"}) {
		t.Errorf("second = %+v", second)
	}
	for _, empty := range []string{"", "# nothing\n", "intentions:\n", "intentions: []\n"} {
		if ins, err := parseIntentions("f.yaml", []byte(empty)); err != nil || len(ins) != 0 {
			t.Errorf("parse %q = %v, %v", empty, ins, err)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]endpointPattern{
		"10.0.0.5:8080":           {Host: "10.0.0.5", Port: 8080},
		"[::FFFF:10.0.0.5]:*":     {Host: "10.0.0.5"},
		"[::1]:80":                {Host: "::1", Port: 80},
		"10.1.2.3/8:*":            {CIDR: "10.0.0.0/8"},
		"*.Svc.cluster.local:443": {Glob: "*.svc.cluster.local", Port: 443},
		"*:9090":                  {Any: true, Port: 9090},
		"DB.internal.:5432":       {Host: "db.internal", Port: 5432},
	} {
		got, err := parseEndpoint(in)
		if err != nil || got != want {
			t.Errorf("parseEndpoint(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
