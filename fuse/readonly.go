package fuse

import (
	"os"
	"strconv"
	"syscall"

	"bazil.org/fuse"
)

// A replica's mount is read-only for applications: its databases change
// only by applying the primary's transactions. SQLite opens a database
// read-write first and falls back to read-only on EACCES, after which every
// write transaction fails with SQLITE_READONLY ("attempt to write a readonly
// database") before touching anything. Readers in WAL mode still need the
// -wal and -shm files, which are local and may be created and written.
//
// This process itself opens databases through the mount to take SQLite's
// locks while applying, so its own requests are let through.

// readOnly is the error for a change an application asks of a replica, or
// nil when the change is allowed.
func (f *FS) readOnly(h fuse.Header, rel string, create bool) error {
	if f.cfg.Status.Writable() || f.isSelf(h.Pid) {
		return nil
	}
	kind, db := classify(rel)
	if kind == kindSHM || kind == kindWAL {
		if !create || f.cfg.Store.DB(db) != nil {
			return nil
		}
	}
	f.logDenied(rel)
	return syscall.EACCES
}

// replica reports whether writes skip the capture layer: a replica's files
// are changed only by applies, never captured.
func (f *FS) replica() bool { return !f.cfg.Status.Writable() }

// isSelf reports whether a request comes from this process. The kernel
// sends the calling thread's ID, so any of our threads counts.
func (f *FS) isSelf(pid uint32) bool {
	if int(pid) == f.pid {
		return true
	}
	_, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(pid), 10))
	return err == nil
}

// logDenied logs the first refused write per file, so the node says why an
// application's write failed without a line per attempt.
func (f *FS) logDenied(rel string) {
	if _, loaded := f.denied.LoadOrStore(rel, true); !loaded {
		f.log.Info("refused a write on a replica: databases are read-only here, write on the primary",
			"name", rel, "primary", f.cfg.Status.PrimaryHostname())
	}
}
