# xedge — see README.md. `make run` and `make test` are the two commands that matter.
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS := -buildvcs=false
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X xedge/xmppd/version.Version=$(VERSION)
BIN := bin
# Fuzz time per target in `make test` (CI budget); raise it locally with FUZZTIME=5m.
FUZZTIME ?= 3s

.PHONY: all setup build kernel kernel-bg run run-host test-scenarios test test-unit test-integration test-vm fuzz lint image bench bench-ceiling bench-dns bench-cluster bench-vip bench-piefxis clean

all: build

setup:
	build/setup.sh test

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./xmppd/cmd/xmppd ./xmppd/cmd/xmppctl ./build/cmd/xedge
	@if [ -d init/cmd/init ] && ls init/cmd/init/*.go >/dev/null 2>&1; then \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/init ./init/cmd/init; fi

# The appliance lab (root): 3 boxes PXE-booted on one L2 segment, an iSCSI LUN each,
# one cluster, no per-box configuration; prints how to connect a client and reach
# each console. Stop it with `bin/xedge lab down`.
run: build
	@build/setup.sh test >/dev/null
	$(BIN)/xedge kernel
	$(BIN)/xedge image
	$(BIN)/xedge lab up -n 3 --pxe --storage --params xedge.registration=1

# The appliance's own kernel (docs/image.md): Debian's linux-source, tinyconfig +
# image/kernel.config, built at nice 19 into /var/cache/xedge (11 min on 2 idle
# cores, 21 CPU-min, once per change of its inputs). `make run` builds it first; `make test`
# builds it in the background while the unit and integration tiers run (at nice 19
# it takes the CPU they leave idle) and the VM tier waits for it. `xedge image` uses
# it when it is built and Debian's kernel otherwise (XEDGE_KERNEL=debian forces that).
kernel: build
	build/setup.sh kernel
	$(BIN)/xedge kernel

kernel-bg: build
	@if $(BIN)/xedge kernel --check >/dev/null 2>&1; then echo "kernel: the appliance's own kernel is built"; \
	else echo "kernel: building the appliance's own kernel in the background (log: $(BIN)/kernel.log)"; \
	  ( $(BIN)/xedge kernel >$(BIN)/kernel.log 2>&1 & ); fi

# Plain xmppd on this host, in the foreground (domain localhost, data under ./var).
run-host: build
	@build/setup.sh base >/dev/null
	$(BIN)/xmppd --data ./var

# Every tier: unit (race), integration (root, namespaces, real daemons), VM (qemu), fuzz smoke.
test: setup build kernel-bg test-unit test-integration test-vm fuzz

test-unit:
	$(GO) test -race -count=1 ./...

# Packages holding tests of a tier (files tagged //go:build integration or vmtest).
tagged = $(shell grep -rl --include='*_test.go' '^//go:build $(1)' . | xargs -r -n1 dirname | sort -u)

# The integration packages run in three chains at once (CI budget), each one
# package at a time: the xmppd servers and the benchmark harnesses; netcfg, whose
# tests live in network namespaces named after the test process and mostly wait
# (one waits out a 2-minute dnsmasq lease); and the local storage, iSCSI, discovery
# and image packages, which start no XMPP server. storage/replicated stays in the
# first chain, after the benchmarks (by then the other chains are done): beside
# the benchmarks its small-device test lost its storage once, the log filling
# faster than a starved snapshot could compact it. Ports come from internal/freeport
# (random, below the ephemeral range), namespaces carry the test's PID. The
# chains' output is printed one after the other.
chain2 = ./netcfg
chain3 = $(filter ./build/% ./discovery% ./image/% ./iscsi ./storage/local,$(call tagged,integration))
chain1 = $(filter-out $(chain2) $(chain3),$(call tagged,integration))
itest = $(GO) test -tags integration -count=1 -p 1 -timeout 20m
test-integration: build
	@l2=$$(mktemp); l3=$$(mktemp); rc=0; \
	echo "$(itest) $(chain2)"; echo "$(itest) $(chain3)"; echo "$(itest) $(chain1)"; \
	$(itest) $(chain2) >$$l2 2>&1 & p2=$$!; \
	$(itest) $(chain3) >$$l3 2>&1 & p3=$$!; \
	$(itest) $(chain1) || rc=$$?; \
	wait $$p2 || { [ $$rc -ne 0 ] || rc=1; }; wait $$p3 || { [ $$rc -ne 0 ] || rc=1; }; \
	cat $$l2 $$l3; rm -f $$l2 $$l3; exit $$rc

# The VM tiers wait for (or do) the own kernel's build (xedge kernel takes the
# build's lock; a built kernel returns at once), unless XEDGE_KERNEL=debian.
ownkernel = if [ "$$XEDGE_KERNEL" != debian ]; then $(BIN)/xedge kernel >$(BIN)/kernel-wait.log 2>&1 || \
  { tail -30 $(BIN)/kernel-wait.log; echo "the appliance's kernel did not build (XEDGE_KERNEL=debian boots Debian's)"; exit 1; }; tail -1 $(BIN)/kernel-wait.log; fi
test-vm: build
	@$(ownkernel)
	$(GO) test -tags vmtest -count=1 -p 1 -timeout 30m $(call tagged,vmtest)

# Every qemu scenario of docs/scenarios.md (root), (c)-(f) included (tag
# scenarios); each rewrites its figures there.
test-scenarios: build
	@$(ownkernel)
	$(GO) test -tags 'vmtest scenarios' -count=1 -p 1 -timeout 60m -v -run 'TestScenario|TestNodePXEServer' ./build/vmtest

# Each fuzz target runs for FUZZTIME (build/fuzz.sh says how a toolchain deadline
# race is told apart from a finding).
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) build/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) vet -tags vmtest ./...

image: build
	$(BIN)/xedge image

# The official comparison offers every server the same classic TLS key exchange
# (X25519, what Debian 12's OpenSSL 3.0 clients offer); xmppd itself keeps the
# post-quantum hybrid for clients that ask for it. --nice needs root and raises
# the run's scheduling priority on this shared machine.
BENCHFLAGS ?= --tls-groups x25519 --nice -10
bench: build
	build/setup.sh bench
	$(GO) run ./bench/cmd/bench $(BENCHFLAGS)

# How many logins/s the load generator can drive on one core (docs/bench.md,
# "The generator's login ceiling"): bounds what the logins figure can show.
bench-ceiling:
	$(GO) test -run '^$$' -bench LoginCeiling -cpu 1 -benchtime 3000x ./bench/loadgen

# SRV convergence: a membership change to the embedded server's answer and to a
# real BIND 9's answer through RFC 2136 (docs/dns.md); results in bench/results/dns-*.
bench-dns: build
	$(GO) run ./bench/dns

# XEP-0227 migration at scale (docs/migration.md): 100,000 generated users imported
# with xmppctl import-piefxis into a one-node raft store; results in bench/results/piefxis-*.
bench-piefxis: build
	$(GO) run ./bench/piefxis

# Cluster figures (docs/cluster.md): same-node vs cross-node messages/s and p99,
# kill-to-unavailable seconds, a 5,000-session reconnect wave; results in
# bench/results/cluster-*.
bench-cluster: build
	$(GO) run ./bench/cluster

# VIP failover (docs/vip.md), root: 20 kills of the VIP holder in network
# namespaces, then 20 freezes (SIGSTOP); results in bench/results/vip-*.
bench-vip: build
	$(GO) run ./bench/cmd/vipfailover -kills 20 -out bench/results
	$(GO) run ./bench/cmd/vipfailover -hang -kills 20 -out bench/results

clean:
	rm -rf $(BIN) out
