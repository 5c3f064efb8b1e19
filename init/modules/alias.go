// Package modules decides which kernel modules the hardware needs — it matches the
// modalias strings of devices under /sys against modules.alias — and loads them (with
// their dependencies from modules.dep) through u-root's pkg/kmodule.
//
// It must not import other xedge packages.
package modules

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Alias is one "alias PATTERN MODULE" line of modules.alias.
type Alias struct {
	Pattern string
	Module  string
}

// Aliases is a parsed modules.alias.
type Aliases []Alias

// Index groups aliases by bus prefix ("pci", "virtio", ...) so that matching a device
// only tries the patterns of its bus: the image's alias list is mostly netfilter and
// crypto names, and fnmatch over all of them for every device is slow under TCG.
type Index struct {
	byBus map[string]Aliases
	any   Aliases // patterns whose bus part has a wildcard
}

// Index builds the bus index.
func (as Aliases) Index() *Index {
	ix := &Index{byBus: map[string]Aliases{}}
	for _, a := range as {
		bus, _, ok := strings.Cut(a.Pattern, ":")
		switch {
		case !ok:
			// a plain name ("net-pf-7"): never a device modalias
		case strings.ContainsAny(bus, "*?["):
			ix.any = append(ix.any, a)
		default:
			ix.byBus[bus] = append(ix.byBus[bus], a)
		}
	}
	return ix
}

// Match is Aliases.Match restricted to the device's bus.
func (ix *Index) Match(modalias string) []string {
	bus, _, _ := strings.Cut(modalias, ":")
	cands := make(Aliases, 0, len(ix.byBus[bus])+len(ix.any))
	cands = append(append(cands, ix.byBus[bus]...), ix.any...)
	return cands.Match(modalias)
}

// Needed returns the modules matching any of the device aliases, sorted.
func (ix *Index) Needed(devAliases []string) []string {
	set := map[string]bool{}
	for _, d := range devAliases {
		for _, m := range ix.Match(d) {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// ParseAliases reads modules.alias.
func ParseAliases(r io.Reader) (Aliases, error) {
	var out Aliases
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "alias" {
			continue
		}
		out = append(out, Alias{Pattern: f[1], Module: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.alias: %w", err)
	}
	return out, nil
}

// Match returns the modules whose alias pattern (fnmatch syntax: * ? [...]) matches
// modalias, without duplicates, in file order.
func (as Aliases) Match(modalias string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range as {
		if seen[a.Module] {
			continue
		}
		if ok, err := path.Match(a.Pattern, modalias); err == nil && ok {
			seen[a.Module] = true
			out = append(out, a.Module)
		}
	}
	return out
}

// Resolve maps a name that may be a module or an alias (as the kernel passes to
// modprobe, e.g. "net-pf-17" or "nft-chain-2-filter") to module names.
func (as Aliases) Resolve(name string) []string {
	if m := as.Match(name); len(m) > 0 {
		return m
	}
	return []string{name}
}

// DeviceAliases lists the distinct modalias strings of devices under sysRoot (normally
// "/sys") on the buses xedge cares about: pci, virtio, and platform/acpi for the rest.
func DeviceAliases(sysRoot string) ([]string, error) {
	seen := map[string]bool{}
	for _, bus := range []string{"pci", "virtio", "acpi", "platform"} {
		files, err := filepath.Glob(filepath.Join(sysRoot, "bus", bus, "devices", "*", "modalias"))
		if err != nil {
			return nil, fmt.Errorf("glob %s: %w", bus, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // device went away
			}
			if s := strings.TrimSpace(string(b)); s != "" {
				seen[s] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// Needed returns the modules matching any of the device aliases, sorted.
func (as Aliases) Needed(devAliases []string) []string { return as.Index().Needed(devAliases) }
