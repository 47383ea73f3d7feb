package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevCommandsWork runs `gateway dev` (what `make run` runs: in-process
// etcd and a local Consul agent behind the gateway) and pastes every command
// it prints into a shell that starts with no ETCDCTL_* or CONSUL_* variable
// and a PATH without the tools: the commands carry no TLS flags, the
// environment files they source carry everything. Allowed ones succeed, the
// ones it marks as denied fail with the store's own permission error. Then
// testdata/devenv.sh sources each environment file and runs etcdctl and
// consul as web and as admin, and the stores are read directly to see what
// was and was not written. Last, Ctrl-C (SIGINT) stops it with exit status
// 0 and no error line.
//
// It runs with both fronts, with only the Consul front (--etcd none) and
// with only the etcd front (--consul none).
func TestDevCommandsWork(t *testing.T) {
	for _, mode := range []struct {
		name  string
		extra []string
		min   int // commands that must have run
	}{
		{"both fronts", nil, 10},
		{"consul only", []string{"--etcd", "none"}, 4},
		{"etcd only", []string{"--consul", "none"}, 8},
	} {
		t.Run(mode.name, func(t *testing.T) { devCommandsWork(t, mode.extra, mode.min) })
	}
}

// cleanShellEnv is the environment the pasted commands run in: nothing
// that points a CLI anywhere, and no bin/ on the PATH.
var cleanShellEnv = []string{"HOME=" + os.TempDir(), "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C"}

func devCommandsWork(t *testing.T, extra []string, min int) {
	dir := t.TempDir()
	devDir := filepath.Join(dir, "dev")
	etcdClient, consulHTTP := freePort(t), freePort(t)
	args := []string{"dev",
		"--dir", devDir,
		"--policies", filepath.Join(repoRoot, "policies"),
		"--listen-etcd", freePort(t), "--listen-admin", freePort(t),
		"--etcd-client", etcdClient, "--etcd-peer", freePort(t),
		"--etcdctl", etcdctlBin, "--plugins", filepath.Join(repoRoot, "bin", "plugins"),
		"--consul", consulBin(t), "--listen-consul", freePort(t), "--consul-http", consulHTTP}
	cmd := exec.Command(gatewayBin, append(args, extra...)...)
	// Its own process group, as a shell's foreground job has, so that
	// Ctrl-C below reaches what a terminal's would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("gateway dev logs:\n%s", logs.String())
		}
	})

	// The help is printed once every listener is up; read up to its end.
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	// Up to 5 minutes: a race-built gateway compiles the example Go plugins
	// in a minute or more the first time (then from the compilation cache).
	timeout := time.After(5 * time.Minute)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("gateway dev exited; printed:\n%s", strings.Join(printed, "\n"))
			}
			printed = append(printed, l)
			done = strings.Contains(l, "policy eval")
		case <-timeout:
			t.Fatalf("gateway dev printed no commands in 5m:\n%s", strings.Join(printed, "\n"))
		}
	}
	var after syncBuffer // what it prints from now on
	go func() {
		for l := range lines {
			after.Write([]byte(l + "\n"))
		}
	}()

	ran := 0
	envFile := "" // the environment file the last "source" line named
	for _, l := range printed {
		l = strings.TrimSpace(l)
		command, comment, _ := strings.Cut(l, "#")
		command = strings.TrimSpace(command)
		if path, ok := strings.CutPrefix(command, "source "); ok {
			envFile = path
			continue
		}
		isCLI := strings.HasPrefix(command, "etcdctl ") || strings.HasPrefix(command, "consul ")
		if command == "" || !isCLI && !strings.Contains(command, "policy eval") {
			continue
		}
		if strings.Contains(command, " watch ") {
			continue // runs until interrupted; watches are covered by the other tests
		}
		if isCLI {
			for _, flag := range []string{"--endpoints", "--cacert", "--cert", "--key", "-ca-file", "-client-cert", "-client-key", "-http-addr", "CONSUL_", "ETCDCTL_"} {
				if strings.Contains(command, flag) {
					t.Errorf("%s: carries %s; the environment file should", command, flag)
				}
			}
			if envFile == "" {
				t.Fatalf("%s: printed before any environment file is sourced", command)
			}
			command = "source " + envFile + " && " + command
		}
		wantErr := strings.Contains(comment, "Error")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c := exec.CommandContext(ctx, "bash", "-c", command)
		c.Env = cleanShellEnv
		out, err := c.CombinedOutput()
		cancel()
		ran++
		switch {
		case wantErr && (err == nil || !strings.Contains(string(out), strings.TrimSpace(comment))):
			t.Errorf("%s\n  want %q, got err=%v:\n%s", command, strings.TrimSpace(comment), err, out)
		case !wantErr && err != nil:
			t.Errorf("%s\n  failed: %v\n%s", command, err, out)
		default:
			t.Logf("ok: %s", command)
		}
	}
	if ran < min {
		t.Fatalf("only %d commands ran from:\n%s", ran, strings.Join(printed, "\n"))
	}
	if extra == nil {
		devEnvScript(t, devDir, etcdClient, consulHTTP)
	}

	// Ctrl-C: the terminal sends SIGINT to the foreground process group.
	stopped = true
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("gateway dev after Ctrl-C: %v, want exit status 0", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("gateway dev did not stop within 30s of Ctrl-C")
	}
	for _, l := range strings.Split(logs.String()+after.String(), "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "level=error") || strings.Contains(low, "[error]") || strings.Contains(low, `"level":"error"`) ||
			strings.Contains(low, "panic") || strings.HasPrefix(low, "error") {
			t.Errorf("gateway dev printed an error line: %s", l)
		}
	}
}

// devEnvScript runs testdata/devenv.sh over the environment files, then
// reads both stores directly: what web was refused is not there, what web
// and admin wrote is.
func devEnvScript(t *testing.T, devDir, etcdClient, consulHTTP string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "e2e", "testdata", "devenv.sh"), devDir)
	c.Env = cleanShellEnv
	out, err := c.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "PASS") {
		t.Fatalf("devenv.sh: %v\n%s", err, out)
	}
	// etcd, directly, with the gateway's own certificate: each key was
	// written once (version 1), with what the script's allowed put wrote.
	for key, want := range map[string]string{"/app/devenv": "from-web", "/other/devenv": "from-admin"} {
		get := exec.CommandContext(ctx, etcdctlBin, "--endpoints=https://"+etcdClient, "--cacert="+filepath.Join(devDir, "bundle.pem"),
			"--cert="+filepath.Join(devDir, "gateway.pem"), "--key="+filepath.Join(devDir, "gateway-key.pem"), "get", key, "-w", "json")
		got, err := get.Output()
		if err != nil {
			t.Fatalf("etcd, directly: get %s: %v\n%s", key, err, got)
		}
		var r struct {
			KVs []struct {
				Value   []byte `json:"value"`
				Version int64  `json:"version"`
			} `json:"kvs"`
		}
		if err := json.Unmarshal(got, &r); err != nil {
			t.Fatalf("etcd, directly: get %s: %v\n%s", key, err, got)
		}
		if len(r.KVs) != 1 || string(r.KVs[0].Value) != want || r.KVs[0].Version != 1 {
			t.Errorf("etcd, read directly: %s is %s, want %q written once (version 1)", key, got, want)
		}
	}
	// Consul, directly, at the agent: the same, by its indexes.
	for key, want := range map[string]string{"app/devenv": "from-web", "other/devenv": "from-admin"} {
		resp, err := http.Get("http://" + consulHTTP + "/v1/kv/" + key)
		if err != nil {
			t.Fatal(err)
		}
		var entries []struct {
			Value                    []byte
			CreateIndex, ModifyIndex uint64
		}
		err = json.NewDecoder(resp.Body).Decode(&entries)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(entries) != 1 || string(entries[0].Value) != want ||
			entries[0].CreateIndex != entries[0].ModifyIndex {
			t.Errorf("Consul, read directly: %s: %s %+v (%v), want %q written once", key, resp.Status, entries, err, want)
		}
	}
}
