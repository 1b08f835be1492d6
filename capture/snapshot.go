package capture

import (
	"context"
	"fmt"
	"os"
	"time"

	sltx "github.com/superfly/ltx"
	"golang.org/x/sys/unix"
)

// SnapshotInfo describes a database image written by Snapshot.
type SnapshotInfo struct {
	Pos      sltx.Pos
	PageSize uint32
	Commit   uint32
}

// Snapshot writes the committed contents of the database at its current
// position into dst, byte for byte (the lock page and holes stay zero), and
// returns that position. Commits of this database wait while the image is
// copied, which takes a local file copy's time; callers then stream dst at
// their own pace without holding anything.
//
// In rollback mode the copy waits until no transaction has written the
// database file (SQLite spills pages into it before the commit); in WAL
// mode the newest committed frames are overlaid on the database file, so a
// concurrent checkpoint changes nothing.
func (r *Registry) Snapshot(ctx context.Context, name string, dst *os.File) (SnapshotInfo, error) {
	d := r.DB(name)
	delay := 100 * time.Microsecond
	for {
		d.mu.Lock()
		if d.wal.active || !d.touched {
			break
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return SnapshotInfo{}, fmt.Errorf("snapshot %s: waiting for the open transaction: %w", name, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
	defer d.mu.Unlock()

	sdb := d.storeDB()
	if sdb == nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", name, os.ErrNotExist)
	}
	info := SnapshotInfo{Pos: sdb.Pos(), PageSize: sdb.PageSize(), Commit: sdb.Commit()}
	if info.Pos.TXID == 0 || info.Commit == 0 {
		return info, dst.Truncate(0)
	}
	f, err := d.dbFile()
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if err := copyImage(dst, f, info); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if !d.wal.active || d.wal.pageSize != info.PageSize || len(d.wal.index) == 0 {
		return info, nil
	}
	// The newest committed version of pages still in the WAL.
	wf, err := os.Open(d.path() + "-wal")
	if err != nil {
		return info, fmt.Errorf("snapshot %s: open wal: %w", name, err)
	}
	defer wf.Close()
	read := d.latestReader(wf, nil, nil, 0)
	buf := make([]byte, info.PageSize)
	for pgno := range d.wal.index {
		if pgno > info.Commit {
			continue
		}
		if err := read(pgno, buf); err != nil {
			return info, fmt.Errorf("snapshot %s: page %d: %w", name, pgno, err)
		}
		if _, err := dst.WriteAt(buf, int64(pgno-1)*int64(info.PageSize)); err != nil {
			return info, fmt.Errorf("snapshot %s: %w", name, err)
		}
	}
	return info, nil
}

// copyImage copies the database file's first Commit pages into dst with
// copy_file_range (in the kernel, holes kept), sized exactly: a WAL may
// have grown the database past the file, and those pages are zero until
// the WAL overlay.
func copyImage(dst, src *os.File, info SnapshotInfo) error {
	size := int64(info.PageSize) * int64(info.Commit)
	if err := dst.Truncate(0); err != nil {
		return err
	}
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	n := min(size, fi.Size())
	for off := int64(0); off < n; {
		w, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), ptr(off), int(min(n-off, 1<<30)), 0)
		if err != nil {
			return fmt.Errorf("copy database: %w", err)
		}
		if w == 0 {
			return fmt.Errorf("copy database: short copy at %d of %d", off, n)
		}
	}
	return dst.Truncate(size)
}

// ptr returns a pointer to a copy of v (copy_file_range advances both
// offsets itself; the source offset drives the loop).
func ptr(v int64) *int64 { return &v }
