package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The node opens files of its own mount (to take SQLite's locks while
// applying on a replica). If it is killed while one of those calls waits for
// an answer from itself, its exit waits forever: the kernel keeps the FUSE
// connection open until the process is gone. A small watchdog process
// notices the node exiting and aborts the connection through fusectl, which
// fails the pending requests and lets the exit finish.

const watchdogCmd = "__watchdog"

// fusectlDir is where the kernel's FUSE control filesystem is mounted.
const fusectlDir = "/sys/fs/fuse/connections"

// startWatchdog starts the watchdog for the mount at dir. It is best effort:
// without fusectl (not root, no sysfs) the node runs without it.
func startWatchdog(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	// fusectl names a connection by the kernel's encoding of the mount's
	// device number.
	conn := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
	abort := filepath.Join(fusectlDir, strconv.FormatUint(conn, 10), "abort")
	if _, err := os.Stat(abort); err != nil {
		_ = unix.Mount("fusectl", fusectlDir, "fusectl", 0, "")
		if _, err := os.Stat(abort); err != nil {
			return fmt.Errorf("fusectl not available: %w", err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, watchdogCmd, strconv.Itoa(os.Getpid()), abort)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives a Ctrl-C of the node's group
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// runWatchdog waits for process pid to start exiting, then aborts the
// connection if it still exists half a second later (a clean exit closes it
// itself). It returns when pid is gone.
func runWatchdog(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: __watchdog PID ABORT-FILE")
	}
	pid, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	abort := args[1]
	for processRunning(pid) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if !stuck(pid) {
		// It exited and closed the connection; the connection's number
		// may already belong to a new mount, which must not be aborted.
		return nil
	}
	return os.WriteFile(abort, []byte("1"), 0o200)
}

// stuck reports whether some thread of process pid is still there, after
// the process was asked to exit.
func stuck(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 0 && f[0] != "Z" && f[0] != "X" {
				return true
			}
		}
	}
	return false
}

// pfExiting is the kernel's PF_EXITING task flag.
const pfExiting = 0x4

// processRunning reports whether process pid exists and is not exiting. A
// killed process whose threads are stuck shows as a zombie leader with
// PF_EXITING threads, so any of these counts as exiting.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 7 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&pfExiting == 0
}
