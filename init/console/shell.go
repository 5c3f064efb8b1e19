package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterh/liner"
)

// Command is one command of the restricted shell.
type Command struct {
	Name    string
	Usage   string
	Summary string
	// Args completes the word after the command name (nil: no completion).
	Args []string
	// Run executes the command; its error is printed.
	Run func(ctx context.Context, args []string, out io.Writer) error
}

// Shell is the restricted admin shell: a fixed command table, nothing else.
type Shell struct {
	Prompt   string
	commands []Command
	byName   map[string]Command
}

// NewShell returns a shell offering cmds and a built-in help.
func NewShell(prompt string, cmds []Command) *Shell {
	s := &Shell{Prompt: prompt, byName: map[string]Command{}}
	help := Command{Name: "help", Summary: "list commands", Run: func(_ context.Context, _ []string, out io.Writer) error {
		s.help(out)
		return nil
	}}
	for _, c := range append([]Command{help}, cmds...) {
		if _, dup := s.byName[c.Name]; dup {
			continue
		}
		s.byName[c.Name] = c
		s.commands = append(s.commands, c)
	}
	sort.Slice(s.commands, func(i, j int) bool { return s.commands[i].Name < s.commands[j].Name })
	return s
}

func (s *Shell) help(out io.Writer) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, c := range s.commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.Name, c.Usage, c.Summary)
	}
	tw.Flush()
}

// Split splits a command line into words; double or single quotes group words.
func Split(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	var quote rune
	have := false
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote, have = r, true
		case quote == 0 && (r == ' ' || r == '\t'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if have {
		out = append(out, cur.String())
	}
	return out, nil
}

// Exec runs one command line and reports whether it succeeded.
func (s *Shell) Exec(ctx context.Context, line string, out io.Writer) bool {
	words, err := Split(line)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return false
	}
	if len(words) == 0 {
		return true
	}
	c, ok := s.byName[words[0]]
	if !ok {
		fmt.Fprintf(out, "unknown command %q: type help\n", words[0])
		return false
	}
	if err := c.Run(ctx, words[1:], out); err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return false
	}
	return true
}

// Complete returns the completions of a partial line (the whole line, as liner wants).
func (s *Shell) Complete(line string) []string {
	words, err := Split(line)
	if err != nil {
		return nil
	}
	trailingSpace := strings.HasSuffix(line, " ")
	var out []string
	switch {
	case len(words) == 0 || (len(words) == 1 && !trailingSpace):
		prefix := ""
		if len(words) == 1 {
			prefix = words[0]
		}
		for _, c := range s.commands {
			if strings.HasPrefix(c.Name, prefix) {
				out = append(out, c.Name+" ")
			}
		}
	case len(words) == 1 || (len(words) == 2 && !trailingSpace):
		c, ok := s.byName[words[0]]
		if !ok {
			return nil
		}
		prefix := ""
		if len(words) == 2 {
			prefix = words[1]
		}
		for _, a := range c.Args {
			if strings.HasPrefix(a, prefix) {
				out = append(out, words[0]+" "+a+" ")
			}
		}
	}
	return out
}

// Run reads commands from the terminal on stdin/stdout with line editing, history and
// tab completion until ctx ends. A line editor error (EOF on ^D, a hung-up line) is
// followed by a short pause so a dead line cannot spin.
func (s *Shell) Run(ctx context.Context, out io.Writer) {
	ln := liner.NewLiner()
	defer ln.Close()
	ln.SetCtrlCAborts(true)
	ln.SetTabCompletionStyle(liner.TabPrints)
	ln.SetCompleter(s.Complete)
	failures := 0
	for ctx.Err() == nil {
		line, err := ln.Prompt(s.Prompt)
		if err != nil {
			if errors.Is(err, liner.ErrPromptAborted) {
				continue
			}
			failures++
			pause := time.Duration(min(failures, 50)) * 100 * time.Millisecond
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			continue
		}
		failures = 0
		if strings.TrimSpace(line) == "" {
			continue
		}
		ln.AppendHistory(line)
		s.Exec(ctx, line, out)
	}
}
