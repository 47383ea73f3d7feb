// Package testenv is the one way tests, the bench and `gateway dev` start
// what storegate runs against: a real etcd (embedded, or the binary as 1 or
// 3 members), a Consul agent, a dev PKI, HAProxy, and gateways built from a
// typed config.Config. Every child process is a *Proc, with kill -9,
// SIGSTOP/SIGCONT, SIGTERM, restart and log capture; Eventually is the one
// readiness wait and loopback the one free-port helper.
//
// The starters return errors, so that programs (the bench, `gateway dev`)
// use them as tests do; Env wraps them for tests, failing the test and
// stopping everything it started when the test ends.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process: etcd, Consul, HAProxy, SPIRE or a gateway. It
// runs in its own process group, dies with its parent (SIGKILL on the
// parent's death), and keeps its output in memory and, when LogFile is
// set, in that file.
type Proc struct {
	Name string
	Bin  string
	Args []string
	// Env, when non-nil, is the child's whole environment.
	Env []string
	// Dir is the child's working directory.
	Dir string
	// LogFile, when set, receives the output as well.
	LogFile string
	// Echo, when set, receives the output as well (a terminal).
	Echo io.Writer

	logs syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts the process described by p.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("%s: already running", p.Name)
	}
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env, cmd.Dir = p.Env, p.Dir
	out := []io.Writer{&p.logs}
	var file *os.File
	if p.LogFile != "" {
		f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		file = f
		out = append(out, f)
	}
	if p.Echo != nil {
		out = append(out, p.Echo)
	}
	w := io.MultiWriter(out...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startTied(cmd); err != nil {
		if file != nil {
			file.Close()
		}
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		if file != nil {
			file.Close()
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Pid is the running process's ID (0 before Start).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the current run has exited.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *Proc) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Exited reports whether the current run has exited, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

func (p *Proc) signal(sig syscall.Signal) error {
	pid := p.Pid()
	if pid == 0 {
		return fmt.Errorf("%s: not started", p.Name)
	}
	return syscall.Kill(-pid, sig) // the whole group: Setpgid makes pgid == pid
}

// Kill is kill -9 of the process group; it returns once the process is gone.
func (p *Proc) Kill() {
	_ = p.signal(syscall.SIGKILL)
	<-p.Done()
}

// Pause stops the process (SIGSTOP): it holds its sockets and answers
// nothing, as a hung process does. SIGSTOP is delivered asynchronously (a
// thread on another CPU can still finish a reply), so Pause returns only
// once every thread of the process is in the stopped state.
func (p *Proc) Pause() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stopped, err := p.allThreadsStopped()
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not stopped 10s after SIGSTOP", p.Name)
		}
		time.Sleep(time.Millisecond) // polling the kernel's thread states
	}
}

// allThreadsStopped reports whether every thread of the process is stopped
// (state T in /proc/PID/task/TID/stat).
func (p *Proc) allThreadsStopped() (bool, error) {
	dir := fmt.Sprintf("/proc/%d/task", p.Pid())
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/stat")
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread exited
			}
			return false, err
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return false, errors.New("unexpected /proc stat format")
		}
		if state := b[i+2]; state != 'T' && state != 't' {
			return false, nil
		}
	}
	return true, nil
}

// Resume continues a paused process (SIGCONT).
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error { return p.signal(sig) }

// Wait waits at most d for the process to exit, and reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.Done():
		return true
	case <-time.After(d):
		return false
	}
}

// Stop asks the process to end (SIGTERM, after SIGCONT in case it is
// paused) and kills it if it has not after grace.
func (p *Proc) Stop(grace time.Duration) {
	if p.Pid() == 0 {
		return
	}
	_ = p.signal(syscall.SIGCONT)
	_ = p.signal(syscall.SIGTERM)
	if !p.Wait(grace) {
		p.Kill()
	}
}

// Restart stops the process (SIGTERM, then SIGKILL after grace) and starts
// it again with the same arguments.
func (p *Proc) Restart(grace time.Duration) error {
	p.Stop(grace)
	return p.Start()
}

// Logs is all the output of every run so far.
func (p *Proc) Logs() string { return p.logs.String() }

// Tail is the last n lines of the output, each cut to 300 bytes.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + " [...]"
		}
	}
	return strings.Join(lines, "\n")
}

// Failure wraps err with the process's name and the tail of its output.
func (p *Proc) Failure(err error) error {
	return fmt.Errorf("%s: %w\n--- last lines of %s ---\n%s", p.Name, err, p.Name, p.Tail(20))
}

// CPUTime is the CPU time (user + system, all threads) the current run has
// used so far, from /proc/PID/stat.
func (p *Proc) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields are counted from the last ')'. utime and stime are fields 14
	// and 15, i.e. the 12th and 13th after the name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(clockTicks()), nil
}

// OpenFDs is the number of file descriptors the process holds open.
func (p *Proc) OpenFDs() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid()))
	return len(ents), err
}

// clockTicks is the kernel's USER_HZ (sysconf(_SC_CLK_TCK)), the unit of
// /proc CPU times, read from the auxiliary vector; 100 when unavailable.
var clockTicks = sync.OnceValue(func() uint64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for ; len(b) >= 16; b = b[16:] {
		if v := nativeUint64(b); v == atClkTck {
			if t := nativeUint64(b[8:]); t > 0 {
				return t
			}
		}
	}
	return 100
})

// startReq asks the launcher goroutine to start a command.
type startReq struct {
	cmd *exec.Cmd
	err chan error
}

var (
	launches     = make(chan startReq)
	launcherOnce sync.Once
)

// launcher starts commands from one locked thread that lives as long as the
// parent: Pdeathsig fires when the thread that started the child exits, not
// the process, and any thread of the pool can end.
func launcher() {
	runtime.LockOSThread()
	for r := range launches {
		r.err <- r.cmd.Start()
	}
}

// startTied starts cmd so that the kernel kills it (SIGKILL) when its
// parent dies, even if no cleanup runs.
func startTied(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	launcherOnce.Do(func() { go launcher() })
	r := startReq{cmd: cmd, err: make(chan error, 1)}
	launches <- r
	return <-r.err
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
