package main

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logSink is where init's log goes: /dev/kmsg (so `dmesg`-style capture and the
// console at high loglevel see it) and a ring of recent lines for the shell's log
// command.
type logSink struct {
	mu    sync.Mutex
	kmsg  *os.File
	ring  []string
	next  int
	full  bool
	extra func(string) // tests and early boot
	// mirror, when set, gets every line too (mirrorTo: a second serial port the
	// qemu lab records, so a killed VM's log survives it).
	mirror chan string
}

const ringLines = 400

func newLogSink() *logSink {
	s := &logSink{ring: make([]string, ringLines)}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		s.kmsg = f
	}
	return s
}

// Write takes one or more log lines (slog writes one record per call).
func (s *logSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		s.ring[s.next] = line
		if s.mirror != nil {
			select {
			case s.mirror <- line:
			default: // the port is stuck: lines are dropped, never the log
			}
		}
		s.next = (s.next + 1) % ringLines
		if s.next == 0 {
			s.full = true
		}
		if s.kmsg != nil {
			prio := "<6>"
			switch {
			case strings.Contains(line, "level=ERROR"):
				prio = "<3>"
			case strings.Contains(line, "level=WARN"):
				prio = "<4>"
			}
			_, _ = s.kmsg.Write([]byte(prio + "xedge-init: " + line))
		}
	}
	return len(b), nil
}

// mirrorTo copies every later log line to the serial port dev (e.g.
// /dev/ttyS1) from its own goroutine. A port without a UART behind it does not
// open: then nothing is mirrored. Test-only (xedge.debug=1): the qemu lab gives
// its VMs a second serial port recorded to a file, where the log of a VM that
// is killed survives it, and the console stays free of log lines.
func (s *logSink) mirrorTo(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	ch := make(chan string, 20000)
	s.mu.Lock()
	s.mirror = ch
	s.mu.Unlock()
	go func() {
		for line := range ch {
			if _, err := f.Write([]byte(time.Now().UTC().Format("15:04:05.000000 ") + line + "\n")); err != nil {
				return
			}
		}
	}()
	return nil
}

// Tail returns up to n recent lines, oldest first.
func (s *logSink) Tail(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []string
	if s.full {
		all = append(all, s.ring[s.next:]...)
	}
	all = append(all, s.ring[:s.next]...)
	if n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}

// prefixWriter turns a child's output into log lines with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	prefix string
	sink   *logSink
	buf    bytes.Buffer
	// onLine, when set, sees every complete line (without the prefix).
	onLine func(string)
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.Reset()
			p.buf.WriteString(line)
			if p.buf.Len() > 4096 {
				_, _ = p.sink.Write([]byte(p.prefix + p.buf.String()))
				p.buf.Reset()
			}
			return len(b), nil
		}
		_, _ = p.sink.Write([]byte(p.prefix + line))
		if p.onLine != nil {
			p.onLine(strings.TrimRight(line, "\n"))
		}
	}
}
