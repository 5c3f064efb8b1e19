// Command xmppctl administers a running xmppd over its admin socket.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"xedge/xmppd/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Getenv("XMPPCTL_SOCKET"), os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
