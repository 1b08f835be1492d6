package fuse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"bazil.org/fuse"
	"github.com/replfs/litefs/store"
	"golang.org/x/sys/unix"
)

// SQLite's lock bytes. Rollback mode locks ranges of the database file;
// WAL mode locks bytes of the -shm file (WALINDEX_LOCK_OFFSET onwards).
const (
	pendingByte  = 0x40000000
	reservedByte = pendingByte + 1
	sharedFirst  = pendingByte + 2
	sharedSize   = 510

	shmLockOffset = 120 // WAL_WRITE_LOCK; then CKPT, RECOVER, READ(0..4)
	shmLockCount  = 8
)

var _ store.ApplyGuard = (*FS)(nil)

// LockForApply takes SQLite's locks on the database through this mount, the
// way a writer would, so readers see a transaction applied whole or not at
// all. Locks are open-file-description locks, which conflict with the
// process-owned POSIX locks SQLite takes, and are granted by the kernel
// (the mount leaves locking to it).
//
// Rollback mode: PENDING first (new readers back off with SQLITE_BUSY and
// retry in their busy handler), then RESERVED, then the SHARED range once the
// current readers finish. WAL mode: every lock byte of the -shm file, one at
// a time, so readers queued on one slot move to the others instead of
// starving the apply; readers that find them all taken retry inside SQLite.
func (f *FS) LockForApply(ctx context.Context, name string, wal bool) (store.ApplyLock, error) {
	f.waitApplyGap(ctx, name)
	l := &applyLock{fs: f, name: name, wal: wal}
	var err error
	if wal {
		if l.file, err = f.lockFile(name+"-shm", os.O_RDWR|os.O_CREATE); err != nil {
			return nil, err
		}
		err = l.lockWAL(ctx)
	} else {
		if l.file, err = f.lockFile(name, os.O_RDWR); err != nil {
			return nil, err
		}
		if err = l.lock(ctx, pendingByte, 1); err == nil {
			if err = l.lock(ctx, reservedByte, 1); err == nil {
				// No reader can start now: wait in the kernel for the
				// current ones, woken the moment the last one leaves.
				err = l.lockWait(ctx, sharedFirst, sharedSize)
			}
		}
	}
	if err != nil {
		l.unlockAll()
		return nil, fmt.Errorf("lock %s for apply: %w", name, err)
	}
	l.start = time.Now()
	return l, nil
}

// lockWAL takes every WAL lock. Readers of a replica's database (whose WAL
// is always empty) read under READ(0) alone, so the other locks come
// quickly; to get READ(0) while readers keep taking it, the checkpoint
// info's nBackfill is first moved off mxFrame, which sends new readers to
// the read-mark slots, all held here, where they retry inside SQLite until
// Unlock restores it. Current READ(0) holders finish their transaction.
func (l *applyLock) lockWAL(ctx context.Context) error {
	for _, i := range []int64{0, 1, 2, 4, 5, 6, 7} { // all but READ(0), at 3
		if err := l.lock(ctx, shmLockOffset+i, 1); err != nil {
			return err
		}
	}
	// No reader in the way: no need to divert the others.
	flk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: shmLockOffset + 3, Len: 1}
	if unix.FcntlFlock(l.file.Fd(), unix.F_OFD_SETLK, &flk) == nil {
		return nil
	}
	l.diverted = divertReaders(l.file)
	if !l.diverted {
		return l.lock(ctx, shmLockOffset+3, 1)
	}
	return l.lockWait(ctx, shmLockOffset+3, 1)
}

// shmInUse reports whether anything but this process's lock descriptor has
// the database's -shm open through the mount. If nothing has, no reader
// holds a copy of the WAL-index header to invalidate: the next one to open
// it is the first and rebuilds the index from the (empty) WAL.
func (f *FS) shmInUse(name string) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(f.cfg.Store.Path(name+"-shm"), &st); err != nil {
		return true
	}
	n := f.cachedNode(st.Ino)
	if n == nil {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opens > 1
}

// lockFile returns this process's descriptor on a file of the mount, opened
// once and kept, since every apply needs it.
func (f *FS) lockFile(rel string, flags int) (*os.File, error) {
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	if fd := f.lockFiles[rel]; fd != nil {
		return fd, nil
	}
	// A raw open keeps the descriptor out of Go's epoll set.
	path := filepath.Join(f.cfg.MountDir, filepath.FromSlash(rel))
	raw, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	fd := os.NewFile(uintptr(raw), path)
	f.lockFiles[rel] = fd
	return fd, nil
}

func (f *FS) closeLockFiles(names ...string) {
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	for _, n := range names {
		if fd := f.lockFiles[n]; fd != nil {
			_ = fd.Close()
			delete(f.lockFiles, n)
		}
	}
}

type applyLock struct {
	fs       *FS
	name     string
	wal      bool
	file     *os.File
	diverted bool // nBackfill was moved; Unlock puts it back
	start    time.Time
}

// applyGap is when a database's locks were last released and how long they
// had been held.
type applyGap struct {
	released time.Time
	held     time.Duration
}

// waitApplyGap keeps the locks free between two applies for at least as
// long as they were held (and at least minApplyGap). A replica catching up
// applies back to back; without a gap its readers, which retry on their own
// schedule (SQLite's busy handler, or the WAL read retry that gives up
// with SQLITE_PROTOCOL after about 100 attempts), could find the locks taken
// at every attempt.
func (f *FS) waitApplyGap(ctx context.Context, name string) {
	v, ok := f.applyGaps.Load(name)
	if !ok {
		return
	}
	g := v.(applyGap)
	wait := min(max(g.held, minApplyGap), maxApplyGap) - time.Since(g.released)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

const (
	minApplyGap = 200 * time.Microsecond
	maxApplyGap = 2 * time.Millisecond
)

// lock takes a write lock on [start, start+n) of the lock file, retrying
// with a short backoff while readers hold it.
func (l *applyLock) lock(ctx context.Context, start, n int64) error {
	flk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n}
	delay := 10 * time.Microsecond
	for {
		err := unix.FcntlFlock(l.file.Fd(), unix.F_OFD_SETLK, &flk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Microsecond)
	}
}

// lockWait takes a write lock on [start, start+n) that no new reader can
// contend for any more, blocking in the kernel (F_OFD_SETLKW) rather than
// polling: on a busy machine a polling goroutine's wake-ups come late.
func (l *applyLock) lockWait(ctx context.Context, start, n int64) error {
	flk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n}
	if err := unix.FcntlFlock(l.file.Fd(), unix.F_OFD_SETLK, &flk); err == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.FcntlFlock(l.file.Fd(), unix.F_OFD_SETLKW, &flk)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The caller unlocks everything on error; a lock granted after
		// that is released when it arrives.
		go func() {
			if <-done == nil {
				l.unlockAll()
			}
		}()
		return ctx.Err()
	}
}

func (l *applyLock) unlockAll() {
	if l.file == nil {
		return
	}
	flk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: 0, Len: 0}
	_ = unix.FcntlFlock(l.file.Fd(), unix.F_OFD_SETLK, &flk)
}

// Unlock drops the kernel's cached copies of what changed, tells WAL-mode
// readers the database changed, and releases the locks.
func (l *applyLock) Unlock(pages []uint32, pageSize uint32) error {
	defer func() {
		l.unlockAll()
		now := time.Now()
		l.fs.applyGaps.Store(l.name, applyGap{released: now, held: now.Sub(l.start)})
	}()
	err := l.fs.invalidate(l.name, pages, pageSize)
	if l.wal && (l.diverted || l.fs.shmInUse(l.name)) {
		err = errors.Join(err, bumpWALIndex(l.file, l.diverted))
	}
	return err
}

// invalidate drops cached pages and attributes of a database file.
func (f *FS) invalidate(name string, pages []uint32, pageSize uint32) error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.cfg.Store.Path(name), &st); err != nil {
		return nil // never looked up by the kernel either
	}
	n := f.cachedNode(st.Ino)
	if n == nil || f.srv == nil {
		return nil
	}
	if pages == nil {
		return ignoreNotCached(f.srv.InvalidateNodeData(n))
	}
	for _, pgno := range pages {
		off := int64(pgno-1) * int64(pageSize)
		if err := ignoreNotCached(f.srv.InvalidateNodeDataRange(n, off, int64(pageSize))); err != nil {
			return err
		}
	}
	return nil
}

func ignoreNotCached(err error) error {
	if errors.Is(err, fuse.ErrNotCached) {
		return nil
	}
	return err
}

// WAL-index layout (native byte order): two copies of the 48-byte header,
// then the checkpoint info, whose first field is nBackfill.
const (
	walIndexHdrSize   = 48
	walIndexChange    = 8  // iChange: bumped so readers drop their page cache
	walIndexIsInit    = 12 // isInit
	walIndexMxFrame   = 16 // mxFrame
	walIndexCksum     = 40 // aCksum over the first 40 bytes
	walIndexNBackfill = 2 * walIndexHdrSize
	walIndexPrefix    = walIndexNBackfill + 4
)

// divertReaders sets nBackfill to mxFrame+1 in an initialised WAL index, so
// readers stop choosing READ(0), and reports whether it did.
func divertReaders(shm *os.File) bool {
	var b [walIndexPrefix]byte
	if n, _ := shm.ReadAt(b[:], 0); n < len(b) || b[walIndexIsInit] == 0 {
		return false
	}
	ne := binary.NativeEndian
	ne.PutUint32(b[walIndexNBackfill:], ne.Uint32(b[walIndexMxFrame:])+1)
	_, err := shm.WriteAt(b[walIndexNBackfill:], walIndexNBackfill)
	return err == nil
}

// bumpWALIndex changes the WAL-index header's change counter. In WAL mode
// SQLite decides whether its page cache is still valid by comparing this
// header, not the database file, so without it readers would keep serving
// pages from before the apply. With restore, nBackfill goes back to mxFrame
// in the same write. An uninitialised header is left alone: the next reader
// rebuilds it from the (empty) WAL and starts with a clean cache.
func bumpWALIndex(shm *os.File, restore bool) error {
	var b [walIndexPrefix]byte
	if n, _ := shm.ReadAt(b[:], 0); n < len(b) || b[walIndexIsInit] == 0 {
		return nil
	}
	h := b[:walIndexHdrSize]
	ne := binary.NativeEndian
	ne.PutUint32(h[walIndexChange:], ne.Uint32(h[walIndexChange:])+1)
	var s1, s2 uint32
	for i := 0; i < walIndexCksum; i += 8 {
		s1 += ne.Uint32(h[i:]) + s2
		s2 += ne.Uint32(h[i+4:]) + s1
	}
	ne.PutUint32(h[walIndexCksum:], s1)
	ne.PutUint32(h[walIndexCksum+4:], s2)
	copy(b[walIndexHdrSize:], h)
	end := 2 * walIndexHdrSize
	if restore {
		ne.PutUint32(b[walIndexNBackfill:], ne.Uint32(h[walIndexMxFrame:]))
		end = walIndexPrefix
	}
	_, err := shm.WriteAt(b[:end], 0)
	return err
}

// Removed forgets a database file deleted by an apply: its cached entries
// and the descriptors held for locking.
func (f *FS) Removed(name string) {
	f.closeLockFiles(name, name+"-shm")
	dir, base := path.Split(name)
	parent := f.root
	if dir = path.Clean(dir); dir != "." {
		var st syscall.Stat_t
		if err := syscall.Stat(f.cfg.Store.Path(dir), &st); err != nil {
			return
		}
		if parent = f.cachedNode(st.Ino); parent == nil {
			return
		}
	}
	if f.srv == nil {
		return
	}
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		_ = f.srv.InvalidateEntry(parent, base+suffix)
	}
}
