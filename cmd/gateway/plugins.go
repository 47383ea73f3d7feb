package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/plugins"
)

// PluginConfig is one WebAssembly plugin: its module, which ops it sees,
// its limits and what a failure does.
type PluginConfig struct {
	Name        string         `yaml:"name"`
	Path        string         `yaml:"path"`
	Match       PluginMatch    `yaml:"match"`
	Timeout     Duration       `yaml:"timeout"`      // per call, default 20ms
	MemoryLimit ByteSize       `yaml:"memory_limit"` // per instance, default 32MiB
	Failure     string         `yaml:"failure"`      // deny (default) | allow
	Instances   int            `yaml:"instances"`    // default: the number of CPUs
	Config      map[string]any `yaml:"config"`       // given to the plugin's init as JSON
}

// PluginMatch selects the ops a plugin sees; an empty list matches all.
type PluginMatch struct {
	Protocols []string `yaml:"protocols"`
	Resources []string `yaml:"resources"`
	Actions   []string `yaml:"actions"`
	Keys      []string `yaml:"keys"` // globs: * within a segment, ** anything
}

// pluginSpecs turns the plugins section into the host's specs, listing every
// problem at once.
func (c *Config) pluginSpecs() ([]plugins.Spec, []error) {
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
		switch p.Failure {
		case "", "deny":
			sp.Failure = plugins.FailDeny
		case "allow":
			sp.Failure = plugins.FailAllow
		default:
			bad(i, "failure: %q is not deny or allow", p.Failure)
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

// loadPlugins starts the plugin host, or returns nil when none is
// configured.
func loadPlugins(ctx context.Context, cfg *Config, m plugins.Metrics, tr trace.Tracer, log *slog.Logger) (*plugins.Host, error) {
	if len(cfg.Plugins) == 0 {
		return nil, nil
	}
	specs, errs := cfg.pluginSpecs()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return plugins.New(ctx, specs, plugins.Options{Logger: log, Metrics: m, Tracer: tr, CacheDir: pluginCacheDir(cfg.PluginCacheDir)})
}

// pluginCacheDir is where compiled plugins are kept: compiling a large Go
// plugin takes seconds, so a restart should not pay it again. wazero keys
// the cache by module and runtime version.
func pluginCacheDir(configured string) string {
	switch configured {
	case "none":
		return ""
	case "":
		if d, err := os.UserCacheDir(); err == nil {
			return filepath.Join(d, "storegate", "wazero")
		}
		return ""
	}
	return configured
}
