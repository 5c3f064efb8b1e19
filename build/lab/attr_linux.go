package lab

import "syscall"

// childAttr makes a child qemu die with the process that started it (tests).
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
