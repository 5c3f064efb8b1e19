package lab

import (
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	c := Config{Name: "n1", Kernel: "/k", Initrd: "/i", Params: "xedge.domain=d", Dir: "/tmp/n1",
		NICs: []NIC{
			{Kind: "mcast", Mcast: "230.0.0.1:1234", MAC: "52:54:00:00:00:01"},
			{Kind: "user", Forwards: map[int]int{15222: 5222}},
		}}
	a := strings.Join(c.Args(), " ")
	for _, want := range []string{
		"-kernel /k -initrd /i -append console=ttyS0 quiet loglevel=3 panic=-1 xedge.domain=d",
		"-accel tcg", "-nodefaults",
		"socket,id=con0,path=/tmp/n1/console.sock,server=on,wait=on,logfile=/tmp/n1/console.log",
		"-netdev socket,id=n0,mcast=230.0.0.1:1234,localaddr=127.0.0.1 -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:00:01",
		"-netdev user,id=n1,restrict=on,hostfwd=tcp:127.0.0.1:15222-:5222",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("args lack %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, "-daemonize") || strings.Contains(a, "enable-kvm") {
		t.Errorf("unexpected: %s", a)
	}
	c.Daemonize = true
	if a := strings.Join(c.Args(), " "); !strings.Contains(a, "wait=off") || !strings.HasSuffix(a, "-daemonize") {
		t.Errorf("daemonized: %s", a)
	}
}
