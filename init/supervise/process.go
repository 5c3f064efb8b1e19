package supervise

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Waiter collects the exit status of a child by PID. PID 1 installs its reaper here,
// because a reaper calling wait4(-1) would otherwise steal the status from exec.Cmd.
type Waiter interface {
	Wait(pid int) syscall.WaitStatus
}

// Command runs a program as the service.
type Command struct {
	Path   string
	Args   []string // without argv[0]
	Env    []string
	Dir    string
	Output io.Writer // stdout and stderr, copied through a pipe; nil discards
	Reaper Waiter    // nil: wait with exec.Cmd.Wait
}

// Start implements Runner.
func (c *Command) Start(ctx context.Context) (Process, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env, cmd.Dir = c.Env, c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", c.Path, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("exec %s: %w", c.Path, err)
	}
	out := c.Output
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, r)
		r.Close()
	}()
	return &proc{cmd: cmd, reaper: c.Reaper, copied: copied}, nil
}

type proc struct {
	cmd    *exec.Cmd
	reaper Waiter
	copied chan struct{}
}

func (p *proc) PID() int                   { return p.cmd.Process.Pid }
func (p *proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *proc) Wait() error {
	var ws syscall.WaitStatus
	if p.reaper == nil {
		err := p.cmd.Wait()
		if err != nil && p.cmd.ProcessState == nil {
			return err
		}
		ws = p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	} else {
		ws = p.reaper.Wait(p.cmd.Process.Pid)
		_ = p.cmd.Process.Release()
	}
	// The output pipe closes when the last holder exits; a grandchild may keep it
	// open, so wait for the copier only briefly.
	select {
	case <-p.copied:
	case <-time.After(200 * time.Millisecond):
	}
	switch {
	case ws.Signaled():
		return fmt.Errorf("killed by signal %s", ws.Signal())
	case ws.ExitStatus() != 0:
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	}
	return nil
}
