package spiretest

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

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
// test binary: Pdeathsig fires when the thread that started the child exits,
// not the process, and any thread of the pool can end (a goroutine that
// exits while locked to its thread takes the thread with it).
func launcher() {
	runtime.LockOSThread()
	for r := range launches {
		r.err <- r.cmd.Start()
	}
}

// startTied starts cmd so that the kernel kills it (SIGKILL) when the test
// binary dies, even if the test's cleanups never run.
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
