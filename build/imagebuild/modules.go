package imagebuild

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ModTree is a parsed modules.dep: module path (relative) -> dependency paths.
type ModTree struct {
	Dir  string
	Deps map[string][]string
}

// ReadModTree parses dir/modules.dep.
func ReadModTree(dir string) (*ModTree, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	defer f.Close()
	t := &ModTree{Dir: dir, Deps: map[string][]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		t.Deps[strings.TrimSpace(mod)] = strings.Fields(deps)
	}
	return t, sc.Err()
}

// ModName is the module name of a module path ("kernel/net/8021q/8021q.ko" -> "8021q"),
// with dashes as underscores as the kernel names modules.
func ModName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// Find returns the module path of a module name.
func (t *ModTree) Find(name string) (string, bool) {
	want := strings.ReplaceAll(name, "-", "_")
	for p := range t.Deps {
		if ModName(p) == want {
			return p, true
		}
	}
	return "", false
}

// Closure returns the module paths for names plus whole dirs (minus excluded
// subtrees) and all their dependencies, sorted. Names that are not modules are
// returned in missing (they may be built in).
func (t *ModTree) Closure(names, dirs, exclude []string) (paths, missing []string) {
	set := map[string]bool{}
	var add func(p string)
	add = func(p string) {
		if set[p] {
			return
		}
		set[p] = true
		for _, d := range t.Deps[p] {
			add(d)
		}
	}
	for _, n := range names {
		if p, ok := t.Find(n); ok {
			add(p)
		} else {
			missing = append(missing, n)
		}
	}
	for p := range t.Deps {
		for _, d := range dirs {
			if strings.HasPrefix(p, d+"/") && !excluded(p, exclude) {
				add(p)
			}
		}
	}
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, missing
}

func excluded(p string, exclude []string) bool {
	for _, e := range exclude {
		if strings.HasPrefix(p, e+"/") {
			return true
		}
	}
	return false
}

// DepFile renders modules.dep for the chosen paths.
func (t *ModTree) DepFile(paths []string) string { return t.DepFileRenamed(paths, nil) }

// DepFileRenamed renders modules.dep with some module paths renamed (compressed).
func (t *ModTree) DepFileRenamed(paths []string, rename map[string]string) string {
	name := func(p string) string {
		if r, ok := rename[p]; ok {
			return r
		}
		return p
	}
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "%s:", name(p))
		for _, d := range t.Deps[p] {
			fmt.Fprintf(&b, " %s", name(d))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// FilterAliases keeps the modules.alias lines of the chosen modules.
func FilterAliases(aliasFile string, paths []string) (string, error) {
	keep := map[string]bool{}
	for _, p := range paths {
		keep[ModName(p)] = true
	}
	f, err := os.Open(aliasFile)
	if err != nil {
		return "", fmt.Errorf("modules.alias: %w", err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == "alias" && keep[strings.ReplaceAll(fs[2], "-", "_")] {
			b.WriteString(sc.Text())
			b.WriteString("\n")
		}
	}
	return b.String(), sc.Err()
}
