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
	if err := fs.Parse(args); err != nil {
		return err
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
