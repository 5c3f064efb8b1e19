// Package boot holds PID 1's mechanics: named boot phases, the mounts of an
// initramfs root, the orphan reaper and the final sync + reboot/poweroff.
//
// It contains no policy about what the node runs; it must not import netcfg, xmppd or
// the console shell.
package boot

import (
	"context"
	"fmt"
	"time"
)

// Phase is one named step of the boot sequence.
type Phase struct {
	Name string
	Run  func(ctx context.Context) error
	// Optional phases report their error and the boot goes on.
	Optional bool
}

// PhaseList is the boot sequence, run in order.
type PhaseList []Phase

// Append adds a phase that must succeed.
func (l PhaseList) Append(name string, run func(context.Context) error) PhaseList {
	return append(l, Phase{Name: name, Run: run})
}

// AppendOptional adds a phase whose failure is reported but does not stop the boot.
func (l PhaseList) AppendOptional(name string, run func(context.Context) error) PhaseList {
	return append(l, Phase{Name: name, Run: run, Optional: true})
}

// Result of one phase.
type Result struct {
	Name     string
	Duration time.Duration
	Err      error
	Optional bool
}

// Run runs the phases in order, calling report after each. It stops at the first
// failing required phase and returns its error wrapped with the phase name.
func (l PhaseList) Run(ctx context.Context, report func(Result)) error {
	for _, p := range l {
		start := time.Now()
		err := p.Run(ctx)
		if report != nil {
			report(Result{Name: p.Name, Duration: time.Since(start), Err: err, Optional: p.Optional})
		}
		if err != nil && !p.Optional {
			return fmt.Errorf("boot phase %s: %w", p.Name, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("boot phase %s: %w", p.Name, ctx.Err())
		}
	}
	return nil
}
