package capture

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"sync"

	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

// DB is the capture state of one database. Its mutex serialises every write
// to the database, its journal and its WAL, which SQLite's own locking
// already makes rare to contend.
type DB struct {
	reg  *Registry
	name string

	mu sync.Mutex

	// Rollback-journal mode: pages written since the last commit point,
	// mapped to the checksum of their committed version (0 if the page did
	// not exist). Only page numbers and checksums are kept, never page data,
	// so a transaction of any size needs little memory.
	dirty     map[uint32]sltx.Checksum
	touched   bool   // the file was written or truncated since the last commit
	base      bool   // basePages/pageSize describe the committed database
	pageSize  uint32 // page size of the committed database
	basePages uint32 // size in pages of the committed database
	synced    bool   // SQLite fsynced the database during this transaction
	inJournal bool   // a rollback journal is being written for this transaction

	wal walState

	file *os.File // read handle on the database file, opened on demand
}

// reset drops all uncommitted state, after a rename or delete.
func (d *DB) reset() {
	d.dirty, d.touched, d.base, d.synced, d.inJournal = nil, false, false, false, false
	d.wal = walState{}
	if d.file != nil {
		_ = d.file.Close()
		d.file = nil
	}
}

func (d *DB) path() string { return d.reg.store.Path(d.name) }

func (d *DB) dbFile() (*os.File, error) {
	if d.file == nil {
		f, err := os.Open(d.path())
		if err != nil {
			return nil, err
		}
		d.file = f
	}
	return d.file, nil
}

// storeDB returns the store's database or nil if nothing was committed yet.
func (d *DB) storeDB() *store.DB { return d.reg.store.DB(d.name) }

// beginIfNeeded records the committed shape of the database before the first
// change of a transaction, so old page checksums can be taken at write time.
func (d *DB) beginIfNeeded() {
	if d.touched {
		return
	}
	d.touched = true
	d.dirty = map[uint32]sltx.Checksum{}
	d.base, d.pageSize, d.basePages = false, 0, 0
	if sdb := d.storeDB(); sdb != nil && sdb.Pos().TXID > 0 && sdb.Commit() > 0 {
		d.base, d.pageSize, d.basePages = true, sdb.PageSize(), sdb.Commit()
	}
}

// notePages records the committed checksum of every page in [first, last]
// that has not been touched yet in this transaction. f is read before the
// caller overwrites it.
func (d *DB) notePages(f *os.File, first, last uint32) error {
	if !d.base {
		return nil // every page is new; the commit will be a full snapshot
	}
	var buf []byte
	for pgno := first; pgno <= last; pgno++ {
		if _, ok := d.dirty[pgno]; ok {
			continue
		}
		var old sltx.Checksum
		if pgno <= d.basePages && pgno != ltx.LockPgno(d.pageSize) {
			if buf == nil {
				buf = make([]byte, d.pageSize)
			}
			n, err := f.ReadAt(buf, int64(pgno-1)*int64(d.pageSize))
			if err != nil && n != len(buf) {
				clear(buf[n:])
			}
			old = ltx.PageChecksum(pgno, buf)
		}
		d.dirty[pgno] = old
	}
	return nil
}

// WriteDB writes data at off in the database file f (opened read-write on the
// backing file), tracking the pages it changes.
func (d *DB) WriteDB(f *os.File, data []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.wal.active && len(data) > 0 {
		d.beginIfNeeded()
		if d.base {
			ps := int64(d.pageSize)
			if err := d.notePages(f, uint32(off/ps)+1, uint32((off+int64(len(data))-1)/ps)+1); err != nil {
				return 0, err
			}
		}
	}
	return f.WriteAt(data, off)
}

// TruncateDB changes the size of the database file.
func (d *DB) TruncateDB(f *os.File, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.wal.active {
		d.beginIfNeeded()
		if d.base {
			ps := int64(d.pageSize)
			if first := uint32((size + ps - 1) / ps); first < d.basePages {
				if err := d.notePages(f, first+1, d.basePages); err != nil {
					return err
				}
			}
		}
	}
	return f.Truncate(size)
}

// SyncDB is SQLite's fsync of the database file. Without an active journal
// (journal_mode OFF or MEMORY, or a plain copy of a database) it is the only
// sign of a commit SQLite gives.
func (d *DB) SyncDB(f *os.File) error {
	if err := f.Sync(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wal.active {
		return nil
	}
	d.synced = true
	if !d.inJournal {
		return d.commitRollback()
	}
	return nil
}

// ReleaseDB is called when the last writable handle on the database closes:
// changes made without a journal are committed then.
func (d *DB) ReleaseDB() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wal.active || d.inJournal {
		return nil
	}
	return d.commitRollback()
}

// WriteJournal writes to the rollback journal. SQLite commits in PERSIST mode
// (and in exclusive locking mode) by zeroing the journal header, so a write of
// zeros at offset 0 is a commit point and the LTX file is written first.
func (d *DB) WriteJournal(f *os.File, data []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 && len(data) >= 8 && isZero(data[:8]) {
		if err := d.commitRollback(); err != nil {
			return 0, err
		}
		d.inJournal = false
	} else {
		d.inJournal = true
	}
	return f.WriteAt(data, off)
}

// TruncateJournal: truncating the journal to zero commits in TRUNCATE mode.
func (d *DB) TruncateJournal(truncate func() error, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size == 0 {
		if err := d.commitRollback(); err != nil {
			return err
		}
		d.inJournal = false
	}
	return truncate()
}

// RemoveJournal: deleting the journal commits in DELETE mode.
func (d *DB) RemoveJournal(remove func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.commitRollback(); err != nil {
		return err
	}
	d.inJournal = false
	return remove()
}

// SyncJournal marks the transaction as one SQLite wants durable.
func (d *DB) SyncJournal(f *os.File) error {
	if err := f.Sync(); err != nil {
		return err
	}
	d.mu.Lock()
	d.synced = true
	d.mu.Unlock()
	return nil
}

// commitRollback turns the pages changed since the last commit point into a
// transaction. A rolled-back transaction restores every page, leaving no
// changed page, and produces nothing.
func (d *DB) commitRollback() error {
	if !d.touched {
		return nil
	}
	defer func() { d.touched, d.dirty, d.synced = false, nil, false }()

	f, err := d.dbFile()
	if err != nil {
		return fmt.Errorf("commit %s: %w", d.name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("commit %s: %w", d.name, err)
	}
	hdr, err := ltx.ReadDBHeader(f, fi.Size())
	if errors.Is(err, ltx.ErrNotDatabase) {
		hdr = ltx.DBHeader{}
	} else if err != nil {
		return fmt.Errorf("commit %s: read header: %w", d.name, err)
	}

	if hdr.PageSize == 0 {
		// Not (or no longer) a database: record it as empty if it was one.
		if !d.base {
			return nil
		}
		return d.write(store.Tx{PageSize: d.pageSize, Commit: 0, Sync: d.synced}, "emptied")
	}
	if !d.base || hdr.PageSize != d.pageSize {
		return d.writeFull(f, hdr)
	}

	var delta sltx.Checksum
	lock := ltx.LockPgno(hdr.PageSize)
	buf := make([]byte, hdr.PageSize)
	read := store.PageReader(f, hdr.PageSize)
	pageSum := func(pgno uint32) (sltx.Checksum, error) {
		if err := read(pgno, buf); err != nil {
			return 0, fmt.Errorf("commit %s: read page %d: %w", d.name, pgno, err)
		}
		return ltx.PageChecksum(pgno, buf), nil
	}

	// Pages cut off by a shrink that were not written still hold their
	// committed contents: take them out of the checksum.
	for pgno := hdr.PageN + 1; pgno <= d.basePages; pgno++ {
		if _, ok := d.dirty[pgno]; !ok && pgno != lock {
			sum, err := pageSum(pgno)
			if err != nil {
				return err
			}
			delta ^= sum
		}
	}
	// Written pages: only those whose contents really changed are shipped.
	var changed []uint32
	for pgno, old := range d.dirty {
		if pgno == lock {
			continue
		}
		if pgno > hdr.PageN {
			delta ^= old
			continue
		}
		sum, err := pageSum(pgno)
		if err != nil {
			return err
		}
		if sum != old {
			delta ^= old ^ sum
			changed = append(changed, pgno)
		}
	}
	// Pages the database grew by without being written (a file extended by
	// writing far past its end) are new, usually holes of a sparse file.
	grown := func(yield func(uint32) bool) {
		for pgno := range store.PageRange(hdr.PageSize, d.basePages+1, hdr.PageN) {
			if _, ok := d.dirty[pgno]; !ok && !yield(pgno) {
				return
			}
		}
	}
	holes := ltx.NewHoles(f)
	nGrown := 0
	for pgno := range grown {
		nGrown++
		if holes.Zero(int64(pgno-1)*int64(hdr.PageSize), int64(hdr.PageSize)) {
			delta ^= ltx.ZeroPageChecksum(pgno, hdr.PageSize)
			continue
		}
		sum, err := pageSum(pgno)
		if err != nil {
			return err
		}
		delta ^= sum
	}
	if len(changed) == 0 && nGrown == 0 && hdr.PageN == d.basePages {
		return nil // rolled back, or rewrote identical pages
	}
	slices.Sort(changed)
	return d.write(store.Tx{
		PageSize: hdr.PageSize, Commit: hdr.PageN, Pages: mergeSorted(slices.Values(changed), grown),
		Read: store.PageReader(f, hdr.PageSize), Delta: delta, Sync: d.synced,
	}, "rollback")
}

// mergeSorted yields the union of two ascending sequences of distinct pages.
func mergeSorted(a, b iter.Seq[uint32]) iter.Seq[uint32] {
	return func(yield func(uint32) bool) {
		nextB, stopB := iter.Pull(b)
		defer stopB()
		vb, okb := nextB()
		for va := range a {
			for okb && vb < va {
				if !yield(vb) {
					return
				}
				vb, okb = nextB()
			}
			if !yield(va) {
				return
			}
		}
		for ; okb; vb, okb = nextB() {
			if !yield(vb) {
				return
			}
		}
	}
}

// writeFull commits the whole database: its first transaction, or one that
// changed the page size.
func (d *DB) writeFull(f *os.File, hdr ltx.DBHeader) error {
	chksum, err := ltx.DatabaseChecksum(f, hdr.PageSize, hdr.PageN)
	if err != nil {
		return fmt.Errorf("commit %s: %w", d.name, err)
	}
	return d.write(store.Tx{
		PageSize: hdr.PageSize, Commit: hdr.PageN, Pages: store.AllPages(hdr.PageSize, hdr.PageN),
		Read: store.PageReader(f, hdr.PageSize), Delta: chksum, Replace: true, Sync: d.synced,
	}, "full")
}

func (d *DB) write(tx store.Tx, kind string) error {
	sdb, err := d.reg.store.CreateDB(d.name)
	if err != nil {
		return err
	}
	pos, err := sdb.WriteTx(tx)
	if err != nil {
		d.reg.log.Error("commit failed", "db", d.name, "err", err)
		return err
	}
	d.reg.log.Debug("commit", "db", d.name, "kind", kind, "pos", pos, "pages", tx.Commit)
	if d.reg.verify {
		d.verify(pos, tx)
	}
	return nil
}

// isZero reports whether b is all zero bytes; bytes.Equal is vectorised,
// which matters when whole databases are scanned for snapshots.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeros [64 << 10]byte
