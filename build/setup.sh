#!/usr/bin/env bash
# build/setup.sh — installs everything xedge's build, tests and benchmarks need on
# Debian 12, idempotently. Run as root (CI does); `make setup` calls it, and so do
# `make run`, `make test` and `make bench` before they start.
#
# Usage: build/setup.sh [test|bench|kernel|all|base]   (default: test)
set -euo pipefail

want=${1:-test}

# Packages per purpose. Keep each list sorted; say in the commit why one was added.
base_pkgs=(ca-certificates cpio git iproute2 iptables make openssl procps psmisc util-linux xz-utils)
test_pkgs=(bind9 bind9-dnsutils dnsmasq-base ipxe-qemu libiscsi-bin linux-image-amd64
           ipxe python3 python3-slixmpp qemu-system-x86 tgt
           # the bench harness's own integration test starts real peers
           # (ejabberd keeps the MAM workload's archive in SQLite)
           ejabberd erlang-p1-sqlite3 prosody tsung
           # the web admin page is tested in headless Chromium
           chromium
           # slixmpp's XEP-0363 upload plugin needs aiohttp (HTTP upload test)
           python3-aiohttp
           # the SQL and LDAP auth backends are tested against real servers
           ldap-utils postgresql slapd)
bench_pkgs=(linux-perf
            # Prosody keeps the MAM workload's archive in SQLite (mod_storage_sql's driver)
            lua-dbi-sqlite3 python3-matplotlib)
# Debian's kernel source and what kbuild needs. `xedge image` rewraps Debian's
# kernel (linux-image-amd64) in a bzImage with an LZ4 payload, built from this
# source's x86 boot stub with Debian's configuration (~140 CPU-s once, cached in
# /var/cache/xedge; PXE boots then skip ~3 CPU-s of xz under TCG), so `test`
# installs them; `make kernel` (the appliance's own kernel, tinyconfig +
# image/kernel.config, 15-40 min) needs the same. lz4 compresses the payload.
kernel_pkgs=(bc bison flex gcc libelf-dev libssl-dev linux-source-6.1 lz4 make)

pkgs=("${base_pkgs[@]}")
case "$want" in
  test) pkgs+=("${test_pkgs[@]}" "${kernel_pkgs[@]}") ;;
  bench) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}" "${kernel_pkgs[@]}") ;;
  kernel) pkgs+=("${kernel_pkgs[@]}") ;;
  all) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}" "${kernel_pkgs[@]}") ;;
  base) ;;
  *) echo "setup.sh: unknown target $want (test|bench|kernel|all|base)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Daemons from these packages must not start on install: tests and benchmarks
  # start their own instances on loopback ports.
  policy=/usr/sbin/policy-rc.d
  restore_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; restore_policy=1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$restore_policy" = 1 ] && rm -f "$policy"
fi

# Go modules (the module proxy is reachable; the build cache makes this cheap).
if command -v go >/dev/null 2>&1; then
  go mod download
fi
echo "setup.sh: ok ($want)"
