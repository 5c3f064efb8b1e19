package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"xedge/build/imagebuild"
)

func init() {
	register("kernel", "build the appliance's own kernel (image/kernel.config) into the cache; `xedge image` then uses it", runKernel)
}

func runKernel(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kernel", flag.ContinueOnError)
	kb := imagebuild.KernelBuild{Repo: ".", Log: os.Stderr}
	fs.StringVar(&kb.Source, "source", "", "linux-source tarball (default: newest /usr/src/linux-source-*.tar.xz)")
	fs.StringVar(&kb.Cache, "cache", "", "cache directory (default: $XEDGE_CACHE or /var/cache/xedge)")
	fs.IntVar(&kb.Jobs, "j", 0, "make jobs (default: number of CPUs)")
	fs.IntVar(&kb.Nice, "nice", 19, "niceness of the build")
	check := fs.Bool("check", false, "only say whether the kernel of the current inputs is built (exit 1 if not)")
	rewrap := fs.Bool("rewrap", false, "instead: rewrap the newest installed Debian kernel's bzImage with an LZ4 payload (what `xedge image` does for Debian's kernel; minutes, cached)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rewrap {
		k, err := imagebuild.FindKernel("")
		if err != nil {
			return err
		}
		rw := imagebuild.Rewrap{Image: k.Image, Cache: kb.Cache, Source: kb.Source, Jobs: kb.Jobs, Log: os.Stderr}
		if *check {
			p, ok := rw.Cached()
			if !ok {
				return fmt.Errorf("%s: not rewrapped yet", k.Image)
			}
			fmt.Println(p)
			return nil
		}
		p, err := rw.Build(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("kernel %s rewrapped (LZ4 payload): %s\n", k.Version, p)
		return nil
	}
	if *check {
		k, ok := kb.Cached()
		if !ok {
			key, err := kb.Key()
			if err != nil {
				return err
			}
			return fmt.Errorf("not built (key %s): run `xedge kernel`", key)
		}
		fmt.Printf("%s %s\n", k.Release, k.Dir)
		return nil
	}
	k, err := kb.Build(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("kernel %s in %s\n  bzImage %s\n  vmlinux %s (PVH)\n", k.Release, k.Dir, k.BzImage, k.Vmlinux)
	if k.Took > 0 {
		fmt.Printf("  built in %s\n", k.Took.Round(1e9))
	}
	return nil
}
