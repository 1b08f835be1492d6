package capture

import (
	"context"
	"fmt"
	"os"
	"slices"
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
	return r.SnapshotProgress(ctx, name, dst, nil)
}

// SnapshotProgress is Snapshot reporting progress: after each chunk of the
// image is final in dst, progress gets the position and how many bytes from
// the start are final, so a caller can stream the image while it is being
// copied.
func (r *Registry) SnapshotProgress(ctx context.Context, name string, dst *os.File, progress func(SnapshotInfo, int64)) (SnapshotInfo, error) {
	if progress == nil {
		progress = func(SnapshotInfo, int64) {}
	}
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
	// Pages whose newest committed version is still in the WAL, in order.
	var walPages []uint32
	var read func(uint32, []byte) error
	if d.wal.active && d.wal.pageSize == info.PageSize && len(d.wal.index) > 0 {
		wf, err := os.Open(d.path() + "-wal")
		if err != nil {
			return info, fmt.Errorf("snapshot %s: open wal: %w", name, err)
		}
		defer wf.Close()
		read = d.latestReader(wf, nil, nil, 0)
		for pgno := range d.wal.index {
			if pgno <= info.Commit {
				walPages = append(walPages, pgno)
			}
		}
		slices.Sort(walPages)
	}
	buf := make([]byte, info.PageSize)
	ps := int64(info.PageSize)
	overlay := func(end int64) error { // WAL pages that start before end
		for len(walPages) > 0 && int64(walPages[0]-1)*ps < end {
			pgno := walPages[0]
			walPages = walPages[1:]
			if err := read(pgno, buf); err != nil {
				return fmt.Errorf("page %d: %w", pgno, err)
			}
			if _, err := dst.WriteAt(buf, int64(pgno-1)*ps); err != nil {
				return err
			}
		}
		return nil
	}
	err = copyImage(dst, f, info, func(end int64) error {
		if err := overlay(end); err != nil {
			return err
		}
		progress(info, end)
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return info, nil
}

// copyImage copies the database file's first Commit pages into dst with
// copy_file_range (in the kernel, holes kept), sized exactly: a WAL may
// have grown the database past the file, and those pages are zero until
// the WAL overlay. done is called after each chunk with the end offset
// copied so far, and last with the image size.
func copyImage(dst, src *os.File, info SnapshotInfo, done func(end int64) error) error {
	size := int64(info.PageSize) * int64(info.Commit)
	if err := dst.Truncate(0); err != nil {
		return err
	}
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if err := dst.Truncate(size); err != nil {
		return err
	}
	n := min(size, fi.Size())
	const chunk = 16 << 20
	for off := int64(0); off < n; {
		end := min(n, off+chunk)
		for off < end {
			w, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), ptr(off), int(end-off), 0)
			if err != nil {
				return fmt.Errorf("copy database: %w", err)
			}
			if w == 0 {
				return fmt.Errorf("copy database: short copy at %d of %d", off, n)
			}
		}
		if off < n {
			if err := done(off); err != nil {
				return err
			}
		}
	}
	return done(size)
}

// ptr returns a pointer to a copy of v (copy_file_range advances both
// offsets itself; the source offset drives the loop).
func ptr(v int64) *int64 { return &v }
