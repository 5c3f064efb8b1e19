// Command xmppd is xedge's XMPP server. See docs/xmppd.md for flags and the YAML
// configuration (--config), which use the same key names.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"xedge/xmppd/config"
	"xedge/xmppd/metrics"
	"xedge/xmppd/server"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, _, err := config.Parse("xmppd", args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "xmppd: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar)
	lv, err := server.ParseLevel(cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "xmppd: %v\n", err)
		return 2
	}
	level.Set(lv)
	// The tap counts records (metrics) and keeps recent warnings (web admin page).
	log := slog.New(metrics.InstallTap(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	slog.SetDefault(log)

	if floor := applyGC(cfg, log); floor != nil {
		defer floor.stop()
	}
	srv, err := server.New(cfg, log, level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "xmppd: %v\n", err)
		return 1
	}
	startTimeout := cfg.StopTimeout * 3
	if cfg.Clustered() {
		startTimeout += cfg.JoinTimeout // joining waits for a leader
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	err = srv.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "xmppd: %v\n", err)
		return 1
	}
	srv.Banner(os.Stdout)
	if cfg.ReleaseMemoryAfter > 0 {
		mctx, mcancel := context.WithCancel(context.Background())
		defer mcancel()
		go releaseMemory(mctx, cfg.ReleaseMemoryAfter, log)
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reloadLevel(cfg, args, srv, log)
			continue
		}
		log.Info("stopping", "component", "server", "signal", sig.String(), "deadline", cfg.StopTimeout,
			"leave_cluster", cfg.Clustered() && cfg.LeaveOnStop)
		break
	}
	signal.Reset(syscall.SIGINT, syscall.SIGTERM) // a second signal kills at once
	ctx, cancel = context.WithTimeout(context.Background(), cfg.StopTimeout)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "xmppd: stop: %v\n", err)
		return 1
	}
	log.Info("stopped", "component", "server")
	return 0
}

// reloadLevel re-reads the configuration on SIGHUP and applies its log level (the
// only setting that changes at runtime).
func reloadLevel(old *config.Config, args []string, srv *server.Server, log *slog.Logger) {
	cfg, _, err := config.Parse("xmppd", args)
	if err != nil {
		log.Warn("SIGHUP: configuration not reloaded", "component", "server", "err", err)
		return
	}
	if err := srv.SetLogLevel(cfg.LogLevel); err != nil {
		log.Warn("SIGHUP: log level not changed", "component", "server", "err", err)
		return
	}
	log.Info("SIGHUP: log level set", "component", "server", "level", cfg.LogLevel)
	_ = old
}
