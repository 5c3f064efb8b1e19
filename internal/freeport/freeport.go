// Package freeport hands out loopback ports for a server that a test, a benchmark
// harness or the lab starts a moment later (an xmppd's --c2s, a daemon's listener,
// a qemu host forward).
//
// A port taken with :0 and closed again is the kernel's next pick for the next :0
// bind on the host, and the server under test often binds one of those itself (a
// c2s listener on 127.0.0.1:0): the two then collide with 'address already in
// use'. The ports handed out here lie below the kernel's ephemeral range, where
// no :0 bind lands, and none is handed out twice by one process.
//
// It sits at the root of the module (internal/) so that every part may use it
// (xmppd's testenv, build/lab, bench/, discovery's bindtest, iscsi/tgt); it must
// not import any other xedge package.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowest is the first port handed out: above the well-known and registered ports
// of the daemons the tests run (5222, 5269, 5280, 3260, 5432, 389, 53, ...).
const lowest = 10000

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// TCP returns a port free for TCP on ip (a loopback address such as 127.0.0.1 or
// 127.0.3.7) a moment ago.
func TCP(ip string) (int, error) { return pick(ip, 1, false) }

// TCPUDP returns a port free for both TCP and UDP on ip a moment ago (a DNS
// server's).
func TCPUDP(ip string) (int, error) { return pick(ip, 1, true) }

// Pair returns a port p such that p and p+1 were free for both TCP and UDP on ip
// a moment ago (an xmppd's cluster port and the gossip port beside it).
func Pair(ip string) (int, error) { return pick(ip, 2, true) }

// Addr returns ip:port with a port from TCP.
func Addr(ip string) (string, error) {
	p, err := TCP(ip)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, strconv.Itoa(p)), nil
}

// pick returns the first of n consecutive ports free on ip, none of them handed
// out before, and marks them handed.
func pick(ip string, n int, udp bool) (int, error) {
	hi := EphemeralLow()
	mu.Lock()
	defer mu.Unlock()
	var lastErr error
	for range 500 {
		p := lowest + rand.IntN(hi-lowest-n+1)
		if err := tryPorts(ip, p, n, udp); err != nil {
			lastErr = err
			continue
		}
		for q := p; q < p+n; q++ {
			handed[q] = true
		}
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no %d free port(s) on %s below %d: %w", n, ip, hi, lastErr)
}

// tryPorts checks that ports p to p+n-1 were not handed out and bind on ip.
func tryPorts(ip string, p, n int, udp bool) error {
	for q := p; q < p+n; q++ {
		if handed[q] {
			return fmt.Errorf("port %d handed out before", q)
		}
		if err := tryPort(ip, q, udp); err != nil {
			return err
		}
	}
	return nil
}

// tryPort binds p on ip (TCP, and UDP if asked) and releases it again.
func tryPort(ip string, p int, udp bool) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		pc.Close()
	}
	return nil
}

// EphemeralLow is the first port of the kernel's ephemeral range (Linux's
// /proc/sys/net/ipv4/ip_local_port_range), 32768 when it cannot be read or leaves
// fewer than 1000 ports below it.
func EphemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo < lowest+1000 {
		return 32768
	}
	return lo
}
