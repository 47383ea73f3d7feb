package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// makeTargets names the make target that builds each tool under bin/.
var makeTargets = map[string]string{
	"etcd": "tools", "etcdctl": "tools", "consul": "consul",
	"spire-server": "spire", "spire-agent": "spire",
}

var makeMu sync.Mutex

// Tool is the path of a tool under bin/ (etcd, etcdctl, consul,
// spire-server, spire-agent), built with make when it is missing: a test
// that needs a tool builds it or fails, it never skips.
func Tool(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	target, ok := makeTargets[name]
	if !ok {
		return "", fmt.Errorf("testenv: no make target builds %s", name)
	}
	makeMu.Lock()
	defer makeMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	mk := exec.Command("make", target)
	mk.Dir, mk.Stdout, mk.Stderr = root, os.Stderr, os.Stderr
	if err := mk.Run(); err != nil {
		return "", fmt.Errorf("testenv: building %s with `make %s`: %w", name, target, err)
	}
	return bin, nil
}

// HAProxyBin is haproxy from Debian's package, installed (apt-get) when it
// is missing.
func HAProxyBin() (string, error) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	makeMu.Lock()
	defer makeMu.Unlock()
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	mk := exec.Command("make", "haproxy")
	mk.Dir, mk.Stdout, mk.Stderr = root, os.Stderr, os.Stderr
	if err := mk.Run(); err != nil {
		return "", fmt.Errorf("testenv: installing haproxy with `make haproxy`: %w", err)
	}
	return "/usr/sbin/haproxy", nil
}

// BuildGateway builds the gateway from this tree into out, with the race
// detector when race is set.
func BuildGateway(out string, race bool) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/gateway")...)
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("testenv: building the gateway: %w", err)
	}
	return nil
}

// examplePlugins are the modules `make plugins` builds into bin/plugins.
var examplePlugins = []string{"limits", "schema", "encrypt", "registration"}

// PluginDir is bin/plugins with the example plugins, built with `make
// plugins` when one is missing.
func PluginDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin", "plugins")
	for _, p := range examplePlugins {
		if _, err := os.Stat(filepath.Join(dir, p+".wasm")); err != nil {
			makeMu.Lock()
			defer makeMu.Unlock()
			mk := exec.Command("make", "plugins")
			mk.Dir, mk.Stdout, mk.Stderr = root, os.Stderr, os.Stderr
			if err := mk.Run(); err != nil {
				return "", fmt.Errorf("testenv: building the example plugins with `make plugins`: %w", err)
			}
			break
		}
	}
	return dir, nil
}
