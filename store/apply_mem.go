package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
	"golang.org/x/sys/unix"
)

// MaxInMemoryLTX is the largest LTX file ApplyLTXData takes; bigger files
// go through a file and ApplyLTX, so memory stays bounded.
const MaxInMemoryLTX = 4 << 20

// decodedLTX is an LTX file decoded once: header, trailer and every page.
type decodedLTX struct {
	hdr     sltx.Header
	trailer sltx.Trailer
	pgnos   []uint32
	pages   []byte // len(pgnos) pages, in order
}

func (d *decodedLTX) page(i int) []byte {
	ps := int(d.hdr.PageSize)
	return d.pages[i*ps : (i+1)*ps]
}

// decodeLTX decodes and verifies a whole LTX file held in memory. Closing
// the decoder checks the file checksum, so a corrupt byte anywhere is an
// error before any page is used.
func decodeLTX(data []byte) (*decodedLTX, error) {
	dec := sltx.NewDecoder(bytes.NewReader(data))
	dec.SetRetainPageIndex(false)
	if err := dec.DecodeHeader(); err != nil {
		return nil, fmt.Errorf("decode ltx header: %w", err)
	}
	d := &decodedLTX{hdr: dec.Header()}
	ps := int(d.hdr.PageSize)
	var ph sltx.PageHeader
	for {
		n := len(d.pages)
		d.pages = append(d.pages, make([]byte, ps)...)
		if err := dec.DecodePage(&ph, d.pages[n:]); err == io.EOF {
			d.pages = d.pages[:n]
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode ltx page: %w", err)
		}
		if ph.Pgno > d.hdr.Commit {
			return nil, fmt.Errorf("ltx page %d beyond commit size %d", ph.Pgno, d.hdr.Commit)
		}
		d.pgnos = append(d.pgnos, ph.Pgno)
	}
	if err := dec.Close(); err != nil {
		return nil, fmt.Errorf("verify ltx: %w", err)
	}
	d.trailer = dec.Trailer()
	return d, nil
}

// ApplyLTXData is ApplyLTX for an LTX file received into memory (at most
// MaxInMemoryLTX bytes): it is decoded once, checked, written to the
// history, and applied, with the same guarantees.
func (s *Store) ApplyLTXData(ctx context.Context, name string, data []byte) (sltx.Pos, error) {
	db, err := s.CreateDB(name)
	if err != nil {
		return sltx.Pos{}, err
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()

	d, err := decodeLTX(data)
	if err != nil {
		return sltx.Pos{}, err
	}
	hdr := d.hdr
	pos := db.Pos()
	if hdr.IsSnapshot() || hdr.MinTXID != pos.TXID+1 || hdr.PreApplyChecksum != pos.PostApplyChecksum ||
		hdr.PageSize != db.PageSize() {
		// Snapshots and page size changes are rare and big: the general path.
		return s.applyViaFile(ctx, db, name, data)
	}
	f, err := db.openFile(s.Path(name))
	if err != nil {
		return pos, err
	}
	oldN := db.Commit()
	post, err := memPostChecksum(d, f, pos.PostApplyChecksum, oldN)
	if err != nil {
		return pos, fmt.Errorf("apply ltx to %s: %w", name, err)
	}
	if post != d.trailer.PostApplyChecksum {
		return pos, fmt.Errorf("apply ltx %s to %s: would reach checksum %s, file promises %s: %w",
			sltx.FormatFilename(hdr.MinTXID, hdr.MaxTXID), name, post, d.trailer.PostApplyChecksum, ErrNeedSnapshot)
	}

	lock, err := s.lockForApply(ctx, name, isWAL(f))
	if err != nil {
		return pos, fmt.Errorf("apply ltx to %s: %w", name, err)
	}
	var werr error
	ps := int64(hdr.PageSize)
	for i, pgno := range d.pgnos {
		if _, werr = f.WriteAt(d.page(i), int64(pgno-1)*ps); werr != nil {
			break
		}
	}
	if werr == nil && hdr.Commit != oldN {
		werr = f.Truncate(int64(hdr.Commit) * ps)
	}
	pages := d.pgnos
	if len(pages) > 256 || hdr.Commit < oldN {
		pages = nil
	}
	uerr := lock.Unlock(pages, hdr.PageSize)
	if werr != nil {
		db.resetPos()
		return sltx.Pos{}, fmt.Errorf("apply ltx to %s: %w (%w)", name, werr, ErrNeedSnapshot)
	}
	if uerr != nil {
		s.log.Warn("dropping cached pages after apply", "db", name, "err", uerr)
	}
	newPos := sltx.NewPos(hdr.MaxTXID, d.trailer.PostApplyChecksum)
	db.mu.Lock()
	db.pos, db.commit = newPos, hdr.Commit
	db.mu.Unlock()
	db.notify()
	// The history file is written later, by SyncHistory in the replica's
	// background sync, off the path to visibility (a file create can wait
	// on the journal commit of a concurrent fsync). A replica that dies
	// before it is written finds its file ahead of its history and takes a
	// snapshot.
	db.mu.Lock()
	db.pending = append(db.pending, pendingLTX{path: db.LTXPath(hdr.MaxTXID), data: bytes.Clone(data)})
	db.mu.Unlock()
	return newPos, nil
}

// pendingLTX is an applied LTX file waiting to be written to the history.
type pendingLTX struct {
	path string
	data []byte
}

// flushPendingLocked writes the pending history files. db.mu is held.
func (db *DB) flushPendingLocked() error {
	for len(db.pending) > 0 {
		p := db.pending[0]
		if err := writeFileNoSync(p.path, p.data); err != nil {
			return fmt.Errorf("write applied transaction to history: %w", err)
		}
		db.pending[0] = pendingLTX{}
		db.pending = db.pending[1:]
	}
	db.pending = nil
	return nil
}

// History files are read by the streamer and by recovery; pending ones are
// written first.
func (db *DB) flushPending() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.flushPendingLocked()
}

// applyViaFile hands an in-memory LTX file to the file-based path.
func (s *Store) applyViaFile(ctx context.Context, db *DB, name string, data []byte) (sltx.Pos, error) {
	tmp := db.IncomingPath()
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return db.Pos(), err
	}
	db.applyMu.Unlock()
	defer db.applyMu.Lock()
	pos, err := s.ApplyLTX(ctx, name, tmp)
	if err != nil {
		os.Remove(tmp)
	}
	return pos, err
}

// memPostChecksum is postChecksum for a decoded file of the database's own
// page size that follows on from its position.
func memPostChecksum(d *decodedLTX, f *os.File, cur sltx.Checksum, oldN uint32) (sltx.Checksum, error) {
	ps := d.hdr.PageSize
	chksum := cur &^ sltx.ChecksumFlag
	readOld := PageReader(f, ps)
	old := make([]byte, ps)
	lock := ltx.LockPgno(ps)
	next := oldN + 1
	for i, pgno := range d.pgnos {
		if pgno <= oldN {
			if err := readOld(pgno, old); err != nil {
				return 0, err
			}
			chksum ^= ltx.PageChecksum(pgno, old)
		} else {
			for ; next < pgno; next++ {
				if next != lock {
					chksum ^= ltx.ZeroPageChecksum(next, ps)
				}
			}
			next = pgno + 1
		}
		chksum ^= ltx.PageChecksum(pgno, d.page(i))
	}
	for ; next <= d.hdr.Commit && d.hdr.Commit > oldN; next++ {
		if next != lock {
			chksum ^= ltx.ZeroPageChecksum(next, ps)
		}
	}
	for pgno := d.hdr.Commit + 1; pgno <= oldN; pgno++ {
		if pgno == lock {
			continue
		}
		if err := readOld(pgno, old); err != nil {
			return 0, err
		}
		chksum ^= ltx.PageChecksum(pgno, old)
	}
	if d.hdr.Commit == 0 {
		return ltx.EmptyChecksum, nil
	}
	return sltx.ChecksumFlag | chksum, nil
}

// writeFileNoSync writes a whole file with raw system calls; replicas make
// their history durable in batches (SyncHistory).
func writeFileNoSync(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		data = data[n:]
	}
	return unix.Close(fd)
}
