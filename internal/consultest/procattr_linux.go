package consultest

import "syscall"

// procAttr kills the agent if the test binary dies without running its
// cleanups (a panic, a timeout), so no stray agents pile up on the machine.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
