package boot

import (
	"golang.org/x/sys/unix"
)

// Action is what the machine does at the end.
type Action int

const (
	Reboot Action = iota
	PowerOff
)

func (a Action) String() string {
	if a == PowerOff {
		return "poweroff"
	}
	return "reboot"
}

// Final syncs filesystems, kills every remaining process and reboots or powers off.
// It returns only if the reboot syscall fails.
func Final(a Action) error {
	unix.Sync()
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if a == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	return unix.Reboot(cmd)
}
