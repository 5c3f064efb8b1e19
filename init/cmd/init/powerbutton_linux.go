package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"time"

	"xedge/init/boot"
	"xedge/init/modules"
)

// Input event constants (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// watchPowerButton loads the ACPI button and evdev drivers off the boot path and turns
// a power-button press (ACPI power-off from a hypervisor, `system_powerdown` in qemu,
// the real button) into a clean poweroff: xmppd is stopped first.
func (n *node) watchPowerButton() {
	as, err := modules.LoadAliases()
	if err != nil {
		n.log.Warn("power button", "err", err)
		return
	}
	if err := modules.Probe(as, []string{"button", "evdev"}); err != nil {
		n.log.Warn("power button drivers", "err", err)
		return
	}
	var found []string
	for i := 0; i < 20 && len(found) == 0; i++ { // devices appear shortly after the drivers
		found = powerButtons()
		if len(found) == 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if len(found) == 0 {
		n.log.Info("no power button device")
		return
	}
	for _, dev := range found {
		go n.readButton(dev)
	}
}

// powerButtons lists /dev/input/eventN devices named like a power button.
func powerButtons() []string {
	var out []string
	names, _ := filepath.Glob("/sys/class/input/event*/device/name")
	for _, nf := range names {
		b, err := os.ReadFile(nf)
		if err != nil || !strings.Contains(strings.ToLower(string(b)), "power button") {
			continue
		}
		ev := filepath.Base(filepath.Dir(filepath.Dir(nf)))
		out = append(out, "/dev/input/"+ev)
	}
	return out
}

// readButton reads input events (struct input_event: 16-byte timeval, type, code,
// value on amd64) until a power key press.
func (n *node) readButton(dev string) {
	f, err := os.Open(dev)
	if err != nil {
		n.log.Warn("power button", "dev", dev, "err", err)
		return
	}
	defer f.Close()
	n.log.Info("watching power button", "dev", dev)
	buf := make([]byte, 24)
	for {
		if _, err := f.Read(buf); err != nil {
			n.log.Warn("power button", "dev", dev, "err", err)
			return
		}
		typ := binary.LittleEndian.Uint16(buf[16:18])
		code := binary.LittleEndian.Uint16(buf[18:20])
		val := int32(binary.LittleEndian.Uint32(buf[20:24]))
		if typ == evKey && code == keyPower && val == 1 {
			n.con.Say("power button pressed")
			n.requestPower(boot.PowerOff)
		}
	}
}
