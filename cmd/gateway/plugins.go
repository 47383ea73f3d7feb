package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/plugins"
)

// loadPlugins starts the plugin host, or returns nil when none is
// configured.
func loadPlugins(ctx context.Context, cfg *config.Config, m plugins.Metrics, tr trace.Tracer, log *slog.Logger) (*plugins.Host, error) {
	if len(cfg.Plugins) == 0 {
		return nil, nil
	}
	specs, errs := cfg.PluginSpecs()
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
