package modules

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Dir returns /lib/modules/<running kernel release>.
func Dir() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])), nil
}

// LoadAliases reads modules.alias from the running kernel's module directory.
func LoadAliases() (Aliases, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, fmt.Errorf("modules.alias: %w", err)
	}
	defer f.Close()
	return ParseAliases(f)
}

// Probe loads the named modules (names or aliases) and their dependencies. Modules
// that are built in or already loaded are fine; the first other error of each module
// is returned joined.
func Probe(as Aliases, names []string) error {
	p, err := kmodule.NewProber(kmodule.ProbeOpts{})
	if err != nil {
		return fmt.Errorf("module prober: %w", err)
	}
	var errs []error
	for _, n := range names {
		for _, m := range as.Resolve(n) {
			if err := p.Probe(m, ""); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("load %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

// LoadForHardware loads the modules the devices need, repeating while new devices
// appear (virtio_pci creates virtio devices whose drivers are modules too), except
// those named in skip (loaded later by their own caller). It returns the modules it
// loaded.
func LoadForHardware(log *slog.Logger, as Aliases, skip ...string) ([]string, error) {
	ix := as.Index()
	done := map[string]bool{}
	for _, s := range skip {
		done[s] = true
	}
	var loaded []string
	var errs []error
	for round := 0; round < 4; round++ {
		devs, err := DeviceAliases("/sys")
		if err != nil {
			return loaded, err
		}
		var todo []string
		for _, m := range ix.Needed(devs) {
			if !done[m] {
				done[m] = true
				todo = append(todo, m)
			}
		}
		if len(todo) == 0 {
			break
		}
		if err := Probe(as, todo); err != nil {
			errs = append(errs, err)
		}
		loaded = append(loaded, todo...)
		log.Info("modules loaded", "round", round, "modules", strings.Join(todo, ","))
	}
	return loaded, errors.Join(errs...)
}
