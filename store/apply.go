package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// ApplyGuard makes an apply atomic for the readers of a database on this
// node's mount: the filesystem implements it with SQLite's own locks and by
// dropping the kernel's cached copies of what changed.
type ApplyGuard interface {
	// LockForApply waits until no reader is inside a read transaction of the
	// database and keeps new ones out. wal selects SQLite's WAL locking
	// protocol (the shared-memory locks) instead of the rollback one.
	LockForApply(ctx context.Context, name string, wal bool) (ApplyLock, error)
	// Removed tells the filesystem a database file was removed underneath it.
	Removed(name string)
}

// ApplyLock is held while pages are written.
type ApplyLock interface {
	// Unlock drops cached copies of the changed pages (all of the file when
	// pages is nil) and lets readers in again.
	Unlock(pages []uint32, pageSize uint32) error
}

// ErrNeedSnapshot means an LTX file cannot be applied at this database's
// position: the replica has to start over from a snapshot.
var ErrNeedSnapshot = errors.New("database needs a snapshot")

// SetApplyGuard installs the filesystem's guard; without one (unit tests)
// applies are not coordinated with readers.
func (s *Store) SetApplyGuard(g ApplyGuard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guard = g
}

func (s *Store) lockForApply(ctx context.Context, name string, wal bool) (ApplyLock, error) {
	s.mu.Lock()
	g := s.guard
	s.mu.Unlock()
	if g == nil {
		return noLock{}, nil
	}
	return g.LockForApply(ctx, name, wal)
}

type noLock struct{}

func (noLock) Unlock([]uint32, uint32) error { return nil }

// ApplyLTX applies the verified LTX file at tmpPath (a file in the database's
// history directory, moved into place on success) as the next transaction of
// the database called name, creating the database if needed.
//
// Nothing is written unless the file is the next transaction (its TXID and
// pre-apply checksum match the position) and the checksum the database would
// have afterwards, computed from the pages it replaces, equals the file's
// post-apply checksum. A mismatch returns ErrNeedSnapshot.
func (s *Store) ApplyLTX(ctx context.Context, name, tmpPath string) (sltx.Pos, error) {
	db, err := s.CreateDB(name)
	if err != nil {
		return sltx.Pos{}, err
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()

	hdr, trailer, err := ltx.Verify(tmpPath)
	if err != nil {
		return sltx.Pos{}, err
	}
	pos := db.Pos()
	full := hdr.IsSnapshot()
	if !full && (hdr.MinTXID != pos.TXID+1 || hdr.PreApplyChecksum != pos.PostApplyChecksum) {
		return pos, fmt.Errorf("apply ltx %s to %s at %s: pre-apply position %s: %w",
			sltx.FormatFilename(hdr.MinTXID, hdr.MaxTXID), name, pos, hdr.PreApplyPos(), ErrNeedSnapshot)
	}
	f, err := db.openFile(s.Path(name))
	if err != nil {
		return pos, err
	}
	oldPS, oldN := db.PageSize(), db.Commit()
	if pos.TXID == 0 {
		oldPS, oldN = 0, 0
	}
	if hdr.PageSize != oldPS {
		full = true // a new page size rewrites every page
	}
	post, err := postChecksum(tmpPath, f, pos.PostApplyChecksum, oldPS, oldN, full)
	if err != nil {
		return pos, fmt.Errorf("apply ltx to %s: %w", name, err)
	}
	if post != trailer.PostApplyChecksum {
		return pos, fmt.Errorf("apply ltx %s to %s: would reach checksum %s, file promises %s: %w",
			sltx.FormatFilename(hdr.MinTXID, hdr.MaxTXID), name, post, trailer.PostApplyChecksum, ErrNeedSnapshot)
	}

	lock, err := s.lockForApply(ctx, name, isWAL(f))
	if err != nil {
		return pos, fmt.Errorf("apply ltx to %s: %w", name, err)
	}
	pages, werr := writePages(tmpPath, f, hdr)
	if werr == nil {
		werr = f.Truncate(int64(hdr.Commit) * int64(hdr.PageSize))
	}
	if full || len(pages) > 256 || hdr.Commit < oldN {
		pages = nil // drop the whole file from the caches
	}
	uerr := lock.Unlock(pages, hdr.PageSize)
	if werr != nil {
		// The file is now between two positions: only a snapshot fixes it.
		db.resetPos()
		return sltx.Pos{}, fmt.Errorf("apply ltx to %s: %w (%w)", name, werr, ErrNeedSnapshot)
	}
	if uerr != nil {
		s.log.Warn("dropping cached pages after apply", "db", name, "err", uerr)
	}

	final := db.LTXPath(hdr.MaxTXID)
	if full {
		// A snapshot starts a new lineage: older files describe another one.
		db.removeHistory()
	}
	if err := os.Rename(tmpPath, final); err != nil {
		return pos, fmt.Errorf("apply ltx to %s: %w", name, err)
	}
	newPos := sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum)
	db.mu.Lock()
	db.pos, db.pageSize, db.commit = newPos, hdr.PageSize, hdr.Commit
	db.mu.Unlock()
	db.notify()
	return newPos, nil
}

// postChecksum computes the checksum the database will have after the LTX
// file is applied: the current checksum with every replaced or cut-off
// page's checksum taken out and every new page's put in. A full file (a
// snapshot or a page size change) is checksummed from its own pages.
func postChecksum(path string, f *os.File, cur sltx.Checksum, oldPS, oldN uint32, full bool) (sltx.Checksum, error) {
	r, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	dec := sltx.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	if err := dec.DecodeHeader(); err != nil {
		return 0, err
	}
	hdr := dec.Header()
	ps := hdr.PageSize
	chksum := cur &^ sltx.ChecksumFlag
	if full {
		chksum, oldN = 0, 0
	}
	oldPage := make([]byte, ps)
	data := make([]byte, ps)
	readOld := PageReader(f, ps)
	next := oldN + 1 // first grown page not yet seen
	lock := ltx.LockPgno(ps)
	zeroTo := func(end uint32) {
		for ; next < end; next++ {
			if next != lock {
				chksum ^= ltx.ZeroPageChecksum(next, ps)
			}
		}
	}
	var ph sltx.PageHeader
	for {
		if err := dec.DecodePage(&ph, data); err == io.EOF {
			break
		} else if err != nil {
			return 0, err
		}
		if ph.Pgno > hdr.Commit {
			return 0, fmt.Errorf("page %d beyond commit size %d", ph.Pgno, hdr.Commit)
		}
		if ph.Pgno <= oldN {
			if err := readOld(ph.Pgno, oldPage); err != nil {
				return 0, err
			}
			chksum ^= ltx.PageChecksum(ph.Pgno, oldPage)
		} else {
			zeroTo(ph.Pgno)
			next = ph.Pgno + 1
		}
		chksum ^= ltx.PageChecksum(ph.Pgno, data)
	}
	if err := dec.Close(); err != nil {
		return 0, err
	}
	if hdr.Commit > oldN {
		zeroTo(hdr.Commit + 1)
	}
	for pgno := hdr.Commit + 1; pgno <= oldN; pgno++ {
		if pgno == lock {
			continue
		}
		if err := readOld(pgno, oldPage); err != nil {
			return 0, err
		}
		chksum ^= ltx.PageChecksum(pgno, oldPage)
	}
	if hdr.Commit == 0 {
		return ltx.EmptyChecksum, nil
	}
	return sltx.ChecksumFlag | chksum, nil
}

// writePages writes the LTX file's pages into f and returns their numbers.
func writePages(path string, f *os.File, hdr sltx.Header) ([]uint32, error) {
	r, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	dec := sltx.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	if err := dec.DecodeHeader(); err != nil {
		return nil, err
	}
	var pages []uint32
	var ph sltx.PageHeader
	data := make([]byte, hdr.PageSize)
	for {
		if err := dec.DecodePage(&ph, data); err == io.EOF {
			break
		} else if err != nil {
			return pages, err
		}
		if _, err := f.WriteAt(data, int64(ph.Pgno-1)*int64(hdr.PageSize)); err != nil {
			return pages, fmt.Errorf("write page %d: %w", ph.Pgno, err)
		}
		pages = append(pages, ph.Pgno)
	}
	return pages, dec.Close()
}

// isWAL reports whether the database file's header says WAL mode, which
// decides the locking protocol its readers use.
func isWAL(f *os.File) bool {
	b := make([]byte, 20)
	n, _ := f.ReadAt(b, 0)
	return n == 20 && (b[18] == 2 || b[19] == 2)
}

func (db *DB) openFile(path string) (*os.File, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.file != nil {
		return db.file, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", db.name, err)
	}
	db.file = f
	return f, nil
}

func (db *DB) fileIsClosed() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.file == nil
}

func (db *DB) closeFile() {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.file != nil {
		_ = db.file.Close()
		db.file = nil
	}
}

// ResetPos makes the database start over from a snapshot at the next
// connection to the primary.
func (db *DB) ResetPos() {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	db.resetPos()
}

// IncomingPath is where a replica receives the next LTX file before it is
// verified and applied.
func (db *DB) IncomingPath() string { return filepath.Join(db.ltxDir, "incoming.ltx.tmp") }

// resetPos forgets the position and history after a failed apply left the
// file between two transactions; the replica then asks for a snapshot.
func (db *DB) resetPos() {
	db.removeHistory()
	db.mu.Lock()
	db.pos, db.pageSize, db.commit, db.syncedTo = sltx.Pos{}, 0, 0, 0
	db.mu.Unlock()
}

// removeHistory deletes every LTX file and any snapshot position: they
// describe a lineage the database is leaving.
func (db *DB) removeHistory() {
	db.histMu.Lock()
	defer db.histMu.Unlock()
	db.mu.Lock()
	db.pending = nil
	db.mu.Unlock()
	txids, _ := db.History()
	for _, txid := range txids {
		_ = os.Remove(db.LTXPath(txid))
	}
	_ = os.Remove(filepath.Join(db.ltxDir, snapshotFile))
}

// SyncFile makes the applied database file durable (replicas batch this).
func (db *DB) SyncFile() error {
	db.mu.Lock()
	f := db.file
	db.mu.Unlock()
	if f == nil || !db.sync {
		return nil
	}
	return f.Sync()
}
