package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// ErrPositionMismatch means a database file does not match any position in its
// history. The node refuses to start rather than ship a database whose
// replicas would silently diverge.
var ErrPositionMismatch = errors.New("database does not match its replication position")

// journalMagic starts an active rollback journal.
var journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}

// IsHelperFile reports whether a name in the mount is one of SQLite's helper
// files rather than a possible database.
func IsHelperFile(name string) bool {
	return strings.HasSuffix(name, "-journal") || strings.HasSuffix(name, "-wal") || strings.HasSuffix(name, "-shm")
}

// recoverAll brings every database file back to exactly the state its history
// describes, the way SQLite would after a crash, then checks it.
func (s *Store) recoverAll() error {
	names := map[string]bool{}
	ents, err := os.ReadDir(s.cfg.ltxRoot())
	if err != nil {
		return fmt.Errorf("list history: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		name, err := readNameFile(filepath.Join(s.cfg.ltxRoot(), e.Name()))
		if err != nil {
			// Left by a crash between creating the directory and its name file.
			s.log.Warn("ignoring history directory without a name", "dir", e.Name(), "err", err)
			continue
		}
		names[name] = true
	}
	root := s.cfg.FilesDir()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || IsHelperFile(d.Name()) {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if isDatabaseFile(path) {
			names[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan databases: %w", err)
	}
	for name := range names {
		db := s.newDB(name)
		if err := s.recoverDB(db); err != nil {
			return err
		}
		if db.pos.TXID > 0 {
			s.dbs[name] = db
		}
	}
	return nil
}

func (s *Store) recoverDB(db *DB) error {
	path := s.Path(db.name)
	if err := db.loadPos(s.log); err != nil {
		return err
	}
	if _, err := os.Stat(path); os.IsNotExist(err) {
		// The file was deleted and the node stopped before forgetting it.
		s.log.Warn("database file is gone, removing its history", "db", db.name)
		return os.RemoveAll(db.ltxDir)
	}

	// A rollback journal left behind after our LTX file was written belongs to
	// a transaction that committed: the LTX file is the commit point, so the
	// journal is finished off instead of being played back.
	if db.pos.TXID > 0 && hasHotJournal(path) {
		chksum, _, err := ltx.FileChecksum(path)
		if err == nil && chksum == db.pos.PostApplyChecksum {
			s.log.Info("finishing committed transaction: removing journal", "db", db.name, "pos", db.pos)
			if err := os.Remove(path + "-journal"); err != nil {
				return fmt.Errorf("recover %s: %w", db.name, err)
			}
		}
	}
	if err := sqliteRecover(path); err != nil {
		return fmt.Errorf("recover %s: %w", db.name, err)
	}

	chksum, hdr, err := ltx.FileChecksum(path)
	if err != nil {
		return fmt.Errorf("recover %s: checksum: %w", db.name, err)
	}
	if db.pos.TXID == 0 {
		if hdr.PageSize == 0 || s.cfg.ResyncOnMismatch {
			// Nothing to record yet, or a replica's file that no position
			// vouches for: the primary's snapshot will replace it.
			return nil
		}
		return s.snapshotExisting(db, path, hdr, chksum)
	}
	if chksum == db.pos.PostApplyChecksum {
		db.pageSize, db.commit = hdr.PageSize, hdr.PageN
		return nil
	}
	err = s.rollForward(db, path, chksum)
	if errors.Is(err, ErrPositionMismatch) && s.cfg.ResyncOnMismatch {
		s.log.Warn("database matches no position in its history; it will be replaced by a snapshot from the primary",
			"db", db.name, "err", err)
		db.removeHistory()
		_ = os.Remove(filepath.Join(db.ltxDir, snapshotFile))
		db.pos, db.pageSize, db.commit, db.syncedTo = sltx.Pos{}, 0, 0, 0
		return db.createHistoryDir()
	}
	return err
}

// rollForward finds the transaction the database file is at and applies the
// later LTX files. This happens when the node died after writing an LTX file
// but before SQLite's own commit reached the database.
func (s *Store) rollForward(db *DB, path string, chksum sltx.Checksum) error {
	txids, err := db.History()
	if err != nil {
		return err
	}
	start := -1
	for i := len(txids) - 1; i >= 0; i-- {
		hdr, trailer, err := ltx.Verify(db.LTXPath(txids[i]))
		if err != nil {
			return fmt.Errorf("recover %s: %w", db.name, err)
		}
		if trailer.PostApplyChecksum == chksum {
			start = i + 1
			break
		}
		if hdr.PreApplyChecksum == chksum && !hdr.IsSnapshot() {
			start = i
			break
		}
	}
	if start < 0 && s.cfg.ResyncOnMismatch && len(txids) > 0 && txids[len(txids)-1] == db.pos.TXID {
		// A replica killed while applying the newest file leaves pages of
		// both versions; writing all of that file's pages again completes
		// it. ApplyFile checks the result against the file's checksum.
		if ok := s.reapplyNewest(db, path); ok {
			return nil
		}
	}
	if start < 0 {
		return fmt.Errorf("recover %s: file checksum %s, position %s, and no retained transaction matches: %w",
			db.name, chksum, db.pos, ErrPositionMismatch)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, txid := range txids[start:] {
		s.log.Info("rolling forward committed transaction", "db", db.name, "txid", txid)
		hdr, _, err := ltx.ApplyFile(db.LTXPath(txid), f, false)
		if err != nil {
			return fmt.Errorf("recover %s: roll forward: %w", db.name, err)
		}
		db.pageSize, db.commit = hdr.PageSize, hdr.Commit
	}
	return f.Sync()
}

// reapplyNewest writes the newest LTX file over the database file and
// reports whether that reached the recorded position.
func (s *Store) reapplyNewest(db *DB, path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, _, err := ltx.ApplyFile(db.LTXPath(db.pos.TXID), f, false); err != nil {
		return false
	}
	s.log.Info("completed a partly applied transaction", "db", db.name, "txid", db.pos.TXID)
	return f.Sync() == nil
}

// snapshotExisting records a database that has no history as transaction 1.
func (s *Store) snapshotExisting(db *DB, path string, hdr ltx.DBHeader, chksum sltx.Checksum) error {
	if err := db.createHistoryDir(); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s.log.Info("recording existing database as snapshot", "db", db.name, "pages", hdr.PageN)
	_, err = db.WriteTx(Tx{
		PageSize: hdr.PageSize, Commit: hdr.PageN, Pages: AllPages(hdr.PageSize, hdr.PageN),
		Read: PageReader(f, hdr.PageSize), Delta: chksum, Replace: true, Sync: true,
	})
	return err
}

// loadPos reads the position from the newest LTX file. A newest file that is
// incomplete was being written when the node died; its transaction was never
// acknowledged, so it is removed.
func (db *DB) loadPos(log interface{ Warn(string, ...any) }) error {
	txids, err := db.History()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	for i := len(txids) - 1; i >= 0; i-- {
		path := db.LTXPath(txids[i])
		hdr, trailer, err := ltx.Verify(path)
		if err != nil {
			if i != len(txids)-1 {
				return fmt.Errorf("load position of %s: %w", db.name, err)
			}
			log.Warn("removing incomplete ltx file left by a crash", "db", db.name, "path", path, "err", err)
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		db.pos = sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum)
		db.syncedTo = hdr.MaxTXID
		db.pageSize, db.commit = hdr.PageSize, hdr.Commit
		break
	}
	if sp, ok := db.readSnapshotPos(); ok && sp.TXID >= db.pos.TXID {
		db.pos = sltx.NewPos(sp.TXID, sp.Checksum)
		db.syncedTo = sp.TXID
		db.pageSize, db.commit = sp.PageSize, sp.Commit
	}
	return nil
}

func hasHotJournal(dbPath string) bool {
	b := make([]byte, 8)
	f, err := os.Open(dbPath + "-journal")
	if err != nil {
		return false
	}
	defer f.Close()
	n, _ := f.ReadAt(b, 0)
	return n == 8 && bytes.Equal(b, journalMagic)
}

func isDatabaseFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	return n == 16 && string(b) == ltx.SQLiteMagic
}

// AllPages yields every page of a database of n pages except the lock page.
func AllPages(pageSize, n uint32) iter.Seq[uint32] {
	return PageRange(pageSize, 1, n)
}

// PageRange yields pages first..last except the lock page.
func PageRange(pageSize, first, last uint32) iter.Seq[uint32] {
	lock := ltx.LockPgno(pageSize)
	return func(yield func(uint32) bool) {
		for pgno := first; pgno <= last && pgno >= first; pgno++ {
			if pgno != lock && !yield(pgno) {
				return
			}
		}
	}
}

// PageReader reads pages from a database file. Pages in holes of a sparse
// file are filled with zeros without a read; pages past the end of the file
// are zeros too.
func PageReader(f interface {
	ReadAt([]byte, int64) (int, error)
}, pageSize uint32) ltx.ReadPageFunc {
	holes := ltx.NewHoles(f)
	return func(pgno uint32, buf []byte) error {
		off := int64(pgno-1) * int64(pageSize)
		if holes.Zero(off, int64(len(buf))) {
			clear(buf)
			return nil
		}
		n, err := f.ReadAt(buf, off)
		if n < len(buf) {
			clear(buf[n:])
			if err == io.EOF {
				err = nil
			}
		}
		return err
	}
}
