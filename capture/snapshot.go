package capture

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
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
	var read ltx.ReadPageFunc
	if d.wal.active && d.wal.pageSize == info.PageSize {
		wf, err := os.Open(d.path() + "-wal")
		if err != nil {
			return info, fmt.Errorf("snapshot %s: open wal: %w", name, err)
		}
		defer wf.Close()
		read = d.latestReader(wf, nil, nil, 0)
	} else {
		f, err := d.dbFile()
		if err != nil {
			return info, fmt.Errorf("snapshot %s: %w", name, err)
		}
		read = store.PageReader(f, info.PageSize)
	}
	if err := writeImage(dst, info, read); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return info, nil
}

// writeImage writes every page through read into dst, leaving zero pages as
// holes so a sparse database stays sparse.
func writeImage(dst *os.File, info SnapshotInfo, read ltx.ReadPageFunc) error {
	if err := dst.Truncate(0); err != nil {
		return err
	}
	ps := int64(info.PageSize)
	const batch = 64 // pages per write: fewer system calls for big databases
	buf := make([]byte, batch*ps)
	lock := ltx.LockPgno(info.PageSize)
	flush := func(first uint32, n int) error {
		if n == 0 {
			return nil
		}
		_, err := dst.WriteAt(buf[:int64(n)*ps], int64(first-1)*ps)
		return err
	}
	var first uint32
	n := 0
	for pgno := uint32(1); pgno <= info.Commit; pgno++ {
		page := buf[int64(n)*ps : int64(n+1)*ps]
		zero := pgno == lock
		if !zero {
			if err := read(pgno, page); err != nil {
				return fmt.Errorf("read page %d: %w", pgno, err)
			}
			zero = isZero(page)
		}
		if zero {
			if err := flush(first, n); err != nil {
				return err
			}
			n = 0
			continue
		}
		if n == 0 {
			first = pgno
		}
		n++
		if n == batch {
			if err := flush(first, n); err != nil {
				return err
			}
			n = 0
		}
	}
	if err := flush(first, n); err != nil {
		return err
	}
	return dst.Truncate(int64(info.Commit) * ps)
}
