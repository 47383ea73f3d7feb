package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevCommandsWork runs `gateway dev` (what `make run` runs: in-process
// etcd and a local Consul agent behind the gateway) and pastes every command
// it prints into a shell: allowed ones succeed, the ones it marks as denied
// fail with the store's own permission error.
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

func devCommandsWork(t *testing.T, extra []string, min int) {
	dir := t.TempDir()
	args := []string{"dev",
		"--dir", filepath.Join(dir, "dev"),
		"--policies", filepath.Join(repoRoot, "policies"),
		"--listen-etcd", freePort(t), "--listen-admin", freePort(t),
		"--etcd-client", freePort(t), "--etcd-peer", freePort(t),
		"--etcdctl", etcdctlBin, "--plugins", filepath.Join(repoRoot, "bin", "plugins"),
		"--consul", consulBin(t), "--listen-consul", freePort(t), "--consul-http", freePort(t)}
	cmd := exec.Command(gatewayBin, append(args, extra...)...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
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
	go func() {
		for range lines { // keep draining
		}
	}()

	ran := 0
	for _, l := range printed {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") ||
			!strings.Contains(l, "--endpoints=") && !strings.Contains(l, "policy eval") && !strings.Contains(l, "CONSUL_HTTP_ADDR=") {
			continue
		}
		if strings.Contains(l, " watch ") {
			continue // runs until interrupted; watches are covered by the other tests
		}
		command, comment, _ := strings.Cut(l, "#")
		wantErr := strings.Contains(comment, "Error")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", command).CombinedOutput()
		cancel()
		ran++
		switch {
		case wantErr && (err == nil || !strings.Contains(string(out), strings.TrimSpace(comment))):
			t.Errorf("%s\n  want %q, got err=%v:\n%s", command, strings.TrimSpace(comment), err, out)
		case !wantErr && err != nil:
			t.Errorf("%s\n  failed: %v\n%s", command, err, out)
		default:
			t.Logf("ok: %s", strings.TrimSpace(command))
		}
	}
	if ran < min {
		t.Fatalf("only %d commands ran from:\n%s", ran, strings.Join(printed, "\n"))
	}
}
