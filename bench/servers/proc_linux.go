package servers

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// RSS returns the resident set size in bytes of the server process and all its
// descendants.
func (s *Server) RSS() (int64, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: not running", s.cfg.Kind)
	}
	return treeRSS(s.cmd.Process.Pid, 0)
}

// children returns the child PIDs of pid.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	for _, t := range tasks {
		cb, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(cb)) {
			if cp, err := strconv.Atoi(c); err == nil {
				out = append(out, cp)
			}
		}
	}
	return out
}

// findDescendant returns the first descendant of pid whose comm is name, or 0.
func findDescendant(pid int, name string, depth int) int {
	if depth > 6 {
		return 0
	}
	for _, c := range children(pid) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c), "comm"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return c
		}
		if d := findDescendant(c, name, depth+1); d != 0 {
			return d
		}
	}
	return 0
}

func treeRSS(pid, depth int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	var total int64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				total = kb * 1024
			}
		}
	}
	if depth > 8 {
		return total, nil
	}
	for _, c := range children(pid) {
		if r, err := treeRSS(c, depth+1); err == nil {
			total += r
		}
	}
	return total, nil
}

// CPUTime returns the user+system CPU seconds the server process has used (its
// threads included, exited children excluded).
func (s *Server) CPUTime() (float64, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: not running", s.cfg.Kind)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("stat of %d: %w", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("stat of %d: short", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil
}
