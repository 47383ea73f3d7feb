package policy

import (
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/storegate/storegate/gate"
)

// IntentionsFile is the name of the intentions file in a policy directory.
const IntentionsFile = "intentions.yaml"

// intention is one entry of intentions.yaml, validated.
type intention struct {
	name      string
	source    string   // SPIFFE ID glob
	resources []string // gate resource names; nil means any
	actions   []string // gate action names; nil means any
	keys      []glob   // nil: any key, and ops that name none
	services  []glob   // nil: any service, and ops that name none
	// owners are SPIFFE ID globs ("**": any owner, none on record
	// included); an intention without owners never matches a foreign op.
	owners []string
	// addresses, when set, are where the services the intention matches may
	// be registered (their address and tagged addresses); checkTargets are
	// the targets their health checks may reach besides their own.
	addresses, checkTargets []endpointPattern
	deny                    bool
	line                    int // of the entry in the file
}

// parseIntentions decodes and validates an intentions file. Decoding is
// strict (unknown fields are errors) and every problem is reported at once,
// each as file:line.
func parseIntentions(file string, src []byte) ([]intention, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		// yaml's own errors already say "line N".
		return nil, fmt.Errorf("policy: %s: %w", file, err)
	}
	p := intentionParser{file: file}
	if len(doc.Content) == 0 { // an empty file holds no intentions
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errorf(root, "want a mapping with the key \"intentions\"")
	}
	var list *yaml.Node
	for k, v := range pairs(root) {
		if k.Value != "intentions" {
			p.addf(k, "unknown field %q", k.Value)
			continue
		}
		list = v
	}
	if list == nil || list.Tag == "!!null" {
		return nil, errors.Join(p.errs...)
	}
	if list.Kind != yaml.SequenceNode {
		p.addf(list, "intentions: want a list")
		return nil, errors.Join(p.errs...)
	}
	seen := make(map[string]int, len(list.Content))
	out := make([]intention, 0, len(list.Content))
	for _, n := range list.Content {
		in, ok := p.intention(n)
		if !ok {
			continue
		}
		if prev, dup := seen[in.name]; dup {
			p.addf(n, "intention %q: duplicate name (first at line %d)", in.name, prev)
			continue
		}
		seen[in.name] = in.line
		out = append(out, in)
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return out, nil
}

type intentionParser struct {
	file string
	errs []error
}

func (p *intentionParser) errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("policy: %s:%d: %s", p.file, n.Line, fmt.Sprintf(format, args...))
}

func (p *intentionParser) addf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, p.errorf(n, format, args...))
}

// intention validates one entry; ok is false when it had errors (recorded).
func (p *intentionParser) intention(n *yaml.Node) (in intention, ok bool) {
	in.line = n.Line
	if n.Kind != yaml.MappingNode {
		p.addf(n, "intention: want a mapping")
		return in, false
	}
	before := len(p.errs)
	fields := make(map[string]*yaml.Node, 8)
	for k, v := range pairs(n) {
		switch k.Value {
		case "name", "description", "source", "resources", "actions", "keys", "services", "owners", "effect",
			"addresses", "check_targets":
			if fields[k.Value] != nil {
				p.addf(k, "duplicate field %q", k.Value)
			}
			fields[k.Value] = v
		default:
			p.addf(k, "unknown field %q", k.Value)
		}
	}
	in.name = p.scalar(n, fields, "name", "intention", true)
	what := fmt.Sprintf("intention %q", in.name)
	if in.name != "" && !validName(in.name) {
		p.addf(fields["name"], "%s: a name may hold only letters, digits and . _ -", what)
	}
	p.scalar(n, fields, "description", what, false) // free text
	in.source = p.scalar(n, fields, "source", what, true)
	if in.source != "" {
		if err := checkSource(in.source); err != nil {
			p.addf(fields["source"], "%s: source: %v", what, err)
		}
	}
	in.resources = p.names(n, fields, "resources", what, func(s string) error {
		_, err := gate.ParseResource(s)
		return err
	})
	in.actions = p.names(n, fields, "actions", what, func(s string) error {
		_, err := gate.ParseAction(s)
		return err
	})
	in.keys = p.globs(fields, "keys", what)
	in.services = p.globs(fields, "services", what)
	for _, e := range p.list(fields, "owners", what) {
		if err := checkOwner(e.Value); err != nil {
			p.addf(e, "%s: owners: %v", what, err)
			continue
		}
		in.owners = append(in.owners, e.Value)
	}
	in.addresses = p.endpoints(fields, "addresses", what)
	in.checkTargets = p.endpoints(fields, "check_targets", what)
	if fields["keys"] != nil && (fields["addresses"] != nil || fields["check_targets"] != nil) {
		p.addf(fields["keys"], "%s: keys cannot be combined with addresses or check_targets, which are about services", what)
	}
	if fields["keys"] != nil && fields["services"] != nil {
		p.addf(fields["services"], "%s: keys and services cannot be combined: an op names one or the other", what)
	}
	switch effect := p.scalar(n, fields, "effect", what, true); effect {
	case "allow":
	case "deny":
		in.deny = true
	case "":
	default:
		p.addf(fields["effect"], "%s: effect must be allow or deny, not %q", what, effect)
	}
	return in, len(p.errs) == before
}

// scalar returns the string field name of the intention what.
func (p *intentionParser) scalar(parent *yaml.Node, fields map[string]*yaml.Node, name, what string, required bool) string {
	v := fields[name]
	if v == nil || v.Tag == "!!null" {
		if required {
			p.addf(parent, "%s: %s is required", what, name)
		}
		return ""
	}
	if v.Kind != yaml.ScalarNode {
		p.addf(v, "%s: %s: want a string", what, name)
		return ""
	}
	if v.Value == "" && required {
		p.addf(v, "%s: %s is empty", what, name)
	}
	return v.Value
}

// list returns the elements of the list field name that are non-empty
// strings, nil when the field is absent.
func (p *intentionParser) list(fields map[string]*yaml.Node, name, what string) []*yaml.Node {
	v := fields[name]
	if v == nil {
		return nil
	}
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		p.addf(v, "%s: %s: want a non-empty list (quote a lone \"*\")", what, name)
		return nil
	}
	out := make([]*yaml.Node, 0, len(v.Content))
	for _, e := range v.Content {
		if e.Kind != yaml.ScalarNode || e.Value == "" {
			p.addf(e, "%s: %s: want a non-empty string", what, name)
			continue
		}
		out = append(out, e)
	}
	return out
}

// names returns a required list of resource or action names; a lone "*"
// means any and comes back as nil.
func (p *intentionParser) names(parent *yaml.Node, fields map[string]*yaml.Node, name, what string, check func(string) error) []string {
	if fields[name] == nil {
		p.addf(parent, "%s: %s is required (use [\"*\"] for any)", what, name)
		return nil
	}
	list := p.list(fields, name, what)
	if len(list) == 1 && list[0].Value == "*" {
		return nil
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		switch {
		case e.Value == "*":
			p.addf(e, "%s: %s: \"*\" must stand alone", what, name)
		case check(e.Value) != nil:
			p.addf(e, "%s: %s: %q is not a known name", what, name, e.Value)
		default:
			out = append(out, e.Value)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// globs returns an optional list of globs.
func (p *intentionParser) globs(fields map[string]*yaml.Node, name, what string) []glob {
	var out []glob
	for _, e := range p.list(fields, name, what) {
		if err := checkGlob(e.Value); err != nil {
			p.addf(e, "%s: %s: %v", what, name, err)
			continue
		}
		out = append(out, parseGlob(e.Value))
	}
	return out
}

// endpoints returns an optional list of endpoint patterns.
func (p *intentionParser) endpoints(fields map[string]*yaml.Node, name, what string) []endpointPattern {
	var out []endpointPattern
	for _, e := range p.list(fields, name, what) {
		ep, err := parseEndpoint(e.Value)
		if err != nil {
			p.addf(e, "%s: %s: %v", what, name, err)
			continue
		}
		out = append(out, ep)
	}
	return out
}

// endpointPattern is one entry of addresses or check_targets: HOST:PORT,
// where HOST is an IP, a CIDR prefix, a DNS name, a glob over a name's
// dot-separated labels ("*.svc.cluster.local") or "*" for any host, and PORT
// a port number or "*" for any. IPv6 hosts are bracketed ("[::1]:8080").
type endpointPattern struct {
	Host string `json:"host,omitempty"`
	CIDR string `json:"cidr,omitempty"`
	Glob string `json:"glob,omitempty"`
	Any  bool   `json:"any,omitempty"`
	Port int    `json:"port"` // 0: any
}

func parseEndpoint(s string) (endpointPattern, error) {
	var ep endpointPattern
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return ep, fmt.Errorf("%q: want HOST:PORT (PORT may be \"*\")", s)
	}
	if port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return ep, fmt.Errorf("%q: the port must be 1-65535 or \"*\"", s)
		}
		ep.Port = n
	}
	host = strings.ToLower(host)
	switch {
	case host == "*":
		ep.Any = true
	case strings.Contains(host, "/"):
		pfx, err := netip.ParsePrefix(host)
		if err != nil {
			return ep, fmt.Errorf("%q: %v", s, err)
		}
		ep.CIDR = pfx.Masked().String()
	case strings.Contains(host, "*"):
		ep.Glob = host
	case host == "":
		return ep, fmt.Errorf("%q: the host is empty", s)
	default:
		if ip, err := netip.ParseAddr(host); err == nil {
			host = ip.Unmap().String() // as the gateway spells target hosts
		}
		ep.Host = strings.TrimSuffix(host, ".")
	}
	return ep, nil
}

// pairs yields the key and value nodes of a mapping.
func pairs(m *yaml.Node) iter.Seq2[*yaml.Node, *yaml.Node] {
	return func(yield func(k, v *yaml.Node) bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if !yield(m.Content[i], m.Content[i+1]) {
				return
			}
		}
	}
}

func validName(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// checkSource accepts "**" (any caller) or a glob over a SPIFFE ID.
func checkSource(s string) error {
	if s == "**" {
		return nil
	}
	if !strings.HasPrefix(s, "spiffe://") {
		return errors.New(`want a SPIFFE ID glob such as "spiffe://example.org/web" or "spiffe://example.org/**", or "**" for any caller`)
	}
	return checkGlob(s)
}

// checkOwner accepts "**" (any owner, none on record included) or a glob
// over a SPIFFE ID.
func checkOwner(s string) error {
	if s != "**" && !strings.HasPrefix(s, "spiffe://") {
		return errors.New(`want a SPIFFE ID glob such as "spiffe://example.org/web" or "spiffe://example.org/**", or "**" for any owner`)
	}
	return checkGlob(s)
}
