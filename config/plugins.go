package config

import (
	"encoding/json"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/plugins"
)

// PluginConfig is one WebAssembly plugin: its module, which ops it sees,
// its limits and what a failure does.
type PluginConfig struct {
	Name        string         `yaml:"name,omitempty"`
	Path        string         `yaml:"path,omitempty"`
	Match       PluginMatch    `yaml:"match,omitempty"`
	Timeout     Duration       `yaml:"timeout,omitempty"`      // per call, default 20ms
	MemoryLimit ByteSize       `yaml:"memory_limit,omitempty"` // per instance, default 32MiB
	Failure     PluginFailure  `yaml:"failure,omitempty"`      // deny (default) | allow
	Instances   int            `yaml:"instances,omitempty"`    // default: the number of CPUs
	Config      map[string]any `yaml:"config,omitempty"`       // given to the plugin's init as JSON
}

// PluginMatch selects the ops a plugin sees; an empty list matches all.
type PluginMatch struct {
	// Protocols, Resources and Actions are checked by PluginSpecs (a
	// problem is reported without its line): configurations built in code
	// spell them as strings.
	Protocols []string `yaml:"protocols,omitempty"`
	Resources []string `yaml:"resources,omitempty"`
	Actions   []string `yaml:"actions,omitempty"`
	Keys      []string `yaml:"keys,omitempty"` // globs: * within a segment, ** anything
}

// PluginFailure is plugins.FailurePolicy as the file spells it: deny (the
// zero value) or allow, parsed once at decoding (a bad value is reported
// with its line, along with every other problem). It is defined here
// because the YAML decoding is the config package's.
type PluginFailure plugins.FailurePolicy

// UnmarshalYAML parses deny or allow.
func (f *PluginFailure) UnmarshalYAML(n *yaml.Node) error {
	v, err := decodeEnum(n, "failure", "deny or allow", plugins.ParseFailurePolicy)
	*f = PluginFailure(v)
	return err
}

// MarshalText writes the failure policy as UnmarshalYAML reads it.
func (f PluginFailure) MarshalText() ([]byte, error) {
	return []byte(plugins.FailurePolicy(f).String()), nil
}

// PluginSpecs turns the plugins section into the host's specs, listing every
// problem at once.
func (c *Config) PluginSpecs() ([]plugins.Spec, []error) {
	var specs []plugins.Spec
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("plugins[%d]: "+format, append([]any{i}, args...)...))
	}
	names := map[string]bool{}
	for i, p := range c.Plugins {
		sp := plugins.Spec{Name: p.Name, Path: p.Path, Timeout: time.Duration(p.Timeout),
			MemoryLimit: uint64(p.MemoryLimit), Instances: p.Instances}
		if p.Name == "" || p.Path == "" {
			bad(i, "name and path are required")
		}
		if names[p.Name] {
			bad(i, "name %q is used twice", p.Name)
		}
		names[p.Name] = true
		switch f := plugins.FailurePolicy(p.Failure); f {
		case plugins.FailDeny, plugins.FailAllow:
			sp.Failure = f
		default:
			bad(i, "failure: %v is not deny or allow", f)
		}
		if p.Timeout < 0 || p.Instances < 0 {
			bad(i, "timeout and instances must not be negative")
		}
		for _, s := range p.Match.Protocols {
			switch s {
			case "etcd":
				sp.Match.Protocols = append(sp.Match.Protocols, gate.ProtocolEtcd)
			case "consul":
				sp.Match.Protocols = append(sp.Match.Protocols, gate.ProtocolConsul)
			default:
				bad(i, "match.protocols: %q is not etcd or consul", s)
			}
		}
		for _, s := range p.Match.Resources {
			r, err := gate.ParseResource(s)
			if err != nil {
				bad(i, "match.resources: %v", err)
			}
			sp.Match.Resources = append(sp.Match.Resources, r)
		}
		for _, s := range p.Match.Actions {
			a, err := gate.ParseAction(s)
			if err != nil {
				bad(i, "match.actions: %v", err)
			}
			sp.Match.Actions = append(sp.Match.Actions, a)
		}
		sp.Match.Keys = p.Match.Keys
		if p.Config != nil {
			b, err := json.Marshal(p.Config)
			if err != nil {
				bad(i, "config: %v", err)
			}
			sp.Config = b
		}
		specs = append(specs, sp)
	}
	return specs, errs
}
