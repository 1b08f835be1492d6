package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// snapshotFile in a history directory records the position of a snapshot a
// replica received. Snapshots arrive as raw database images, not LTX files,
// so this file stands in for the LTX file the position would otherwise be
// read from.
const snapshotFile = "snapshot"

// SnapshotPos is the position and shape of a database image.
type SnapshotPos struct {
	TXID     sltx.TXID     `json:"txid"`
	Checksum sltx.Checksum `json:"checksum"`
	PageSize uint32        `json:"pageSize"`
	Commit   uint32        `json:"commit"`
}

// ReceiveSnapshot copies a database image of sp's shape from r into a new
// temporary file next to the database, checksumming it on the way, and
// returns the file only if the checksum matches sp. Nothing of the database
// is touched.
func (s *Store) ReceiveSnapshot(name string, sp SnapshotPos, r io.Reader) (*os.File, error) {
	if sp.PageSize != 0 && !sltx.IsValidPageSize(sp.PageSize) {
		return nil, fmt.Errorf("snapshot of %s: invalid page size %d", name, sp.PageSize)
	}
	path := s.Path(name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(s.tmpDir(), "snapshot-*")
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", name, err)
	}
	fail := func(err error) (*os.File, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("snapshot of %s: %w", name, err)
	}
	chksum := ltx.EmptyChecksum &^ sltx.ChecksumFlag
	if sp.Commit > 0 {
		ps := int64(sp.PageSize)
		const batch = 256
		buf := make([]byte, batch*ps)
		lock := ltx.LockPgno(sp.PageSize)
		for pgno := uint32(1); pgno <= sp.Commit; {
			n := min(uint32(batch), sp.Commit-pgno+1)
			b := buf[:int64(n)*ps]
			if _, err := io.ReadFull(r, b); err != nil {
				return fail(fmt.Errorf("read pages from %d: %w", pgno, err))
			}
			for i := uint32(0); i < n; i++ {
				if pgno+i != lock {
					chksum ^= ltx.PageChecksum(pgno+i, b[int64(i)*ps:int64(i+1)*ps])
				}
			}
			if _, err := tmp.WriteAt(b, int64(pgno-1)*ps); err != nil {
				return fail(err)
			}
			pgno += n
		}
	}
	got := sltx.ChecksumFlag | chksum
	if got != sp.Checksum {
		return fail(fmt.Errorf("image checksum %s, expected %s: %w", got, sp.Checksum, ltx.ErrChecksumMismatch))
	}
	return tmp, nil
}

func (s *Store) tmpDir() string { return filepath.Join(s.cfg.Dir, "tmp") }

// TmpDir is a scratch directory on the data disk, emptied at every start.
func (s *Store) TmpDir() string { return s.tmpDir() }

// ApplySnapshot replaces the database called name with the verified image
// from ReceiveSnapshot (which it closes and removes) and moves it to sp.
// Readers see the old database or the new one: the copy is made in place,
// under the apply guard, so open file descriptors of SQLite connections stay
// valid.
func (s *Store) ApplySnapshot(ctx context.Context, name string, sp SnapshotPos, img *os.File) error {
	defer func() {
		img.Close()
		os.Remove(img.Name())
	}()
	db, err := s.CreateDB(name)
	if err != nil {
		return err
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	path := s.Path(name)
	if _, err := os.Stat(path); os.IsNotExist(err) && db.fileIsClosed() {
		// A database new to this node: no reader can have it open, so the
		// verified image simply becomes the file.
		if err := os.Rename(img.Name(), path); err != nil {
			return fmt.Errorf("apply snapshot to %s: %w", name, err)
		}
	} else if err := s.copySnapshot(ctx, db, name, sp, img); err != nil {
		return err
	}
	db.removeHistory()
	if err := db.writeSnapshotPos(sp); err != nil {
		return fmt.Errorf("apply snapshot to %s: %w", name, err)
	}
	db.mu.Lock()
	db.pos = sltx.NewPos(sp.TXID, sp.Checksum)
	db.pageSize, db.commit, db.syncedTo = sp.PageSize, sp.Commit, sp.TXID
	db.mu.Unlock()
	db.notify()
	return nil
}

// copySnapshot writes the image over an existing database in place, under
// the apply guard, so SQLite connections' open descriptors stay valid.
func (s *Store) copySnapshot(ctx context.Context, db *DB, name string, sp SnapshotPos, img *os.File) error {
	f, err := db.openFile(s.Path(name))
	if err != nil {
		return err
	}
	lock, err := s.lockForApply(ctx, name, isWAL(f) || isWAL(img))
	if err != nil {
		return fmt.Errorf("apply snapshot to %s: %w", name, err)
	}
	size := int64(sp.Commit) * int64(sp.PageSize)
	werr := copyFile(f, img, size)
	if werr == nil {
		werr = f.Truncate(size)
	}
	uerr := lock.Unlock(nil, sp.PageSize)
	if werr != nil {
		db.resetPos()
		return fmt.Errorf("apply snapshot to %s: %w", name, werr)
	}
	if uerr != nil {
		s.log.Warn("dropping cached pages after snapshot", "db", name, "err", uerr)
	}
	return nil
}

// copyFile copies size bytes of src into dst at offset 0 with
// copy_file_range, which stays in the kernel and keeps holes cheap.
func copyFile(dst, src *os.File, size int64) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(dst, io.LimitReader(src, size)) // uses copy_file_range between files
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("copied %d of %d bytes", n, size)
	}
	return nil
}

func (db *DB) writeSnapshotPos(sp SnapshotPos) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	path := filepath.Join(db.ltxDir, snapshotFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if db.sync {
		if err := fsyncPath(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if db.sync {
		return fsyncPath(db.ltxDir)
	}
	return nil
}

func (db *DB) readSnapshotPos() (SnapshotPos, bool) {
	b, err := os.ReadFile(filepath.Join(db.ltxDir, snapshotFile))
	if err != nil {
		return SnapshotPos{}, false
	}
	var sp SnapshotPos
	if json.Unmarshal(b, &sp) != nil || sp.TXID == 0 {
		return SnapshotPos{}, false
	}
	return sp, true
}

// RemoveReplicaDB deletes a database that the primary deleted, with its
// helper files and history.
func (s *Store) RemoveReplicaDB(name string) error {
	path := s.Path(name)
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		if err := os.Remove(path + suffix); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	s.mu.Lock()
	g := s.guard
	s.mu.Unlock()
	if g != nil {
		g.Removed(name)
	}
	return s.RemoveDB(name)
}

// SnapshotApplied copies a replica's database, as of its position, into dst.
// Applies wait for the copy; on a primary use the capture layer's snapshot,
// which also waits for SQLite's writers.
func (s *Store) SnapshotApplied(name string, dst *os.File) (SnapshotPos, error) {
	db := s.DB(name)
	if db == nil {
		return SnapshotPos{}, fmt.Errorf("snapshot %s: %w", name, os.ErrNotExist)
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	pos := db.Pos()
	sp := SnapshotPos{TXID: pos.TXID, Checksum: pos.PostApplyChecksum, PageSize: db.PageSize(), Commit: db.Commit()}
	src, err := os.Open(s.Path(name))
	if err != nil {
		return sp, err
	}
	defer src.Close()
	if err := copyFile(dst, src, int64(sp.PageSize)*int64(sp.Commit)); err != nil {
		return sp, fmt.Errorf("snapshot %s: %w", name, err)
	}
	_, err = dst.Seek(0, io.SeekStart)
	return sp, err
}
