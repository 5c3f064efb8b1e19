package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"xedge/build/imagebuild"
)

func init() {
	register("image", "build out/vmlinuz, out/vmlinux and out/initramfs.cpio.xz", runImage)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runImage(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "out", "output directory")
	kernel := fs.String("kernel", "", "own (the appliance's kernel, built by xedge kernel), debian (newest installed), or an installed Debian kernel version (default: own when built for image/kernel.config, else debian; $XEDGE_KERNEL)")
	domain := fs.String("domain", "", "embed xedge.domain=DOMAIN as the image's default")
	xmppd := fs.String("xmppd", "", "use this prebuilt xmppd binary instead of building ./xmppd/cmd/xmppd")
	version := fs.String("version", "", "version to stamp (default: git describe)")
	var params multiFlag
	fs.Var(&params, "param", "embed an xedge.* default, e.g. --param xedge.registration=1 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *domain != "" {
		params = append(params, "xedge.domain="+*domain)
	}
	res, err := imagebuild.Build(ctx, imagebuild.Options{
		Repo: ".", Out: *out, Kernel: *kernel, Version: *version, Defaults: params, Xmppd: *xmppd, Log: os.Stderr,
	})
	if err != nil {
		return err
	}
	fmt.Printf("xedge image (kernel %s, %d files, %d modules, built in %s)\n", res.Kernel.Version, res.Files, res.Modules, res.Took.Round(100e6))
	for _, a := range res.Artefacts {
		fmt.Printf("  %-28s %8.2f MiB\n", a, float64(res.Sizes[a])/(1<<20))
	}
	fmt.Printf("  kernel command line: %s\n", res.Cmdline)
	for _, w := range res.Warnings {
		fmt.Printf("  warning: %s\n", w)
	}
	if res.CpioXz != "" {
		sz := res.Sizes[res.CpioXz]
		if sz > imagebuild.MaxCompressed {
			return fmt.Errorf("initramfs.cpio.xz is %.2f MiB, over the %d MiB target", float64(sz)/(1<<20), imagebuild.MaxCompressed>>20)
		}
		fmt.Printf("  initramfs.cpio.xz within the %d MiB target\n", imagebuild.MaxCompressed>>20)
	}
	return nil
}
