package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// writeEnvFiles writes <dir>/<caller>.env for each dev caller, its shell
// environment for the etcdctl and consul CLIs: sourced, it points them at
// the gateway with that caller's SVID, so that commands need no TLS flags.
// It holds the variables etcdctl (ETCDCTL_*) and the consul CLI (CONSUL_*)
// read, for the fronts that run, and a PATH that finds the CLIs the
// printed commands name when the user's PATH would not.
func (d *devSetup) writeEnvFiles() error {
	for _, who := range devCallers {
		var b strings.Builder
		fmt.Fprintf(&b, "# storegate dev: etcdctl and consul as spiffe://example.org/%s, through the gateway.\n", who)
		fmt.Fprintf(&b, "# Use it with: source %s\n", shortPath(d.envPath(who)))
		if dirs := d.toolDirs(); len(dirs) > 0 {
			fmt.Fprintf(&b, "export PATH=%s:\"$PATH\"\n", shellQuote(strings.Join(dirs, ":")))
		}
		cert := filepath.Join(d.dir, who+".pem")
		key := filepath.Join(d.dir, who+"-key.pem")
		ca := filepath.Join(d.dir, "bundle.pem")
		vars := [][2]string{}
		if d.etcd != "none" {
			vars = append(vars, [][2]string{
				{"ETCDCTL_ENDPOINTS", "https://" + d.listenEtcd},
				{"ETCDCTL_CACERT", ca}, {"ETCDCTL_CERT", cert}, {"ETCDCTL_KEY", key},
			}...)
		}
		if d.consulBin != "" {
			vars = append(vars, [][2]string{
				{"CONSUL_HTTP_ADDR", "https://" + d.listenConsul},
				{"CONSUL_CACERT", ca}, {"CONSUL_CLIENT_CERT", cert}, {"CONSUL_CLIENT_KEY", key},
			}...)
		}
		for _, v := range vars {
			fmt.Fprintf(&b, "export %s=%s\n", v[0], shellQuote(v[1]))
		}
		path := d.envPath(who)
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	return nil
}

// envPath is where writeEnvFiles puts who's environment.
func (d *devSetup) envPath(who string) string { return filepath.Join(d.dir, who+".env") }

// toolDirs are the directories of the etcdctl and consul the commands
// use, where the user's PATH would find another one or none.
func (d *devSetup) toolDirs() []string {
	var dirs []string
	for _, tool := range []struct{ name, path string }{{"etcdctl", findTool("etcdctl", d.etcdctl)}, {"consul", d.consulBin}} {
		if tool.path == "" || !filepath.IsAbs(tool.path) {
			continue
		}
		if found, err := exec.LookPath(tool.name); err == nil && sameFile(found, tool.path) {
			continue
		}
		if dir := filepath.Dir(tool.path); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// shellQuote quotes s for POSIX shells: single quotes, with each ' as '\”.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shortPath is p relative to the working directory when it is below it,
// else p.
func shortPath(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return p
}
