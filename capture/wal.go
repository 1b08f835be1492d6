package capture

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
)

// walState follows the WAL the way SQLite's own wal-index does: which frame
// holds the newest committed version of each page in the current WAL
// generation, and which frames belong to the transaction being written.
type walState struct {
	active       bool // a WAL header was written: the database is in WAL mode
	pageSize     uint32
	salt1, salt2 uint32
	index        frameMap // newest committed frame of each page
	// The open transaction's frames, slot i at txnStart + i*frameSize. SQLite
	// rewrites frames of the open transaction in place on cache spill, and a
	// rolled-back transaction's frames are overwritten by the next one, so
	// frames are tracked by slot, not appended.
	txnStart   int64
	slots      []uint32 // pgno of each frame slot
	covered    []span   // byte ranges written at or after txnStart
	commitEnd  int64    // end of the commit frame seen, 0 if none yet
	commitSize uint32

	// The last committed transaction's frames, to tell SQLite's checksum
	// fix-ups of them (right after the commit) from a rewind of the WAL.
	lastStart int64
	lastSlots []uint32
	// resync is set when the WAL went somewhere the tracking cannot follow
	// (SQLite's recovery after a crash rewinding over frames already
	// committed here). The next commit re-reads all frame headers and is
	// written as a full snapshot of the database.
	resync bool

	// A frame header being assembled: the kernel splits writes at page-cache
	// boundaries, which can fall inside a 24-byte frame header.
	asmOff  int64
	asmMask uint32
	asm     [walFrameHeaderSize]byte
}

// assemble collects the bytes of the frame header at fo that this write
// (data at off) carries, and returns the header once all 24 bytes arrived.
func (w *walState) assemble(fo int64, data []byte, off int64) ([]byte, bool) {
	end := off + int64(len(data))
	lo, hi := max(fo, off), min(fo+walFrameHeaderSize, end)
	if lo >= hi {
		return nil, false
	}
	if lo == fo && hi == fo+walFrameHeaderSize {
		return data[fo-off : fo-off+walFrameHeaderSize], true
	}
	if w.asmOff != fo {
		w.asmOff, w.asmMask = fo, 0
	}
	copy(w.asm[lo-fo:hi-fo], data[lo-off:hi-off])
	for i := lo - fo; i < hi-fo; i++ {
		w.asmMask |= 1 << i
	}
	if w.asmMask != 1<<walFrameHeaderSize-1 {
		return nil, false
	}
	w.asmOff, w.asmMask = 0, 0
	return w.asm[:], true
}

func (w *walState) frameSize() int64 { return walFrameHeaderSize + int64(w.pageSize) }

// frameMap maps a page number to a frame, stored as a frame number rather
// than an offset: a transaction of a million pages keeps two of these, and
// 32-bit values halve their size.
type frameMap map[uint32]uint32

func (w *walState) frameNo(off int64) uint32 { return uint32((off - walHeaderSize) / w.frameSize()) }

func (w *walState) frameOff(fi uint32) int64 { return walHeaderSize + int64(fi)*w.frameSize() }

// span is a half-open byte range.
type span struct{ lo, hi int64 }

// cover records that [lo, hi) of the open transaction's region was written.
// Writes normally arrive in order, leaving a single span, but a crash-testing
// VFS may reorder them, so a commit waits until its whole region is written.
func (w *walState) cover(lo, hi int64) {
	lo = max(lo, w.txnStart)
	if lo >= hi {
		return
	}
	merged := span{lo, hi}
	out := w.covered[:0]
	for _, sp := range w.covered {
		if sp.hi < merged.lo || sp.lo > merged.hi {
			out = append(out, sp)
			continue
		}
		merged.lo, merged.hi = min(merged.lo, sp.lo), max(merged.hi, sp.hi)
	}
	out = append(out, merged)
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	w.covered = out
}

// ready reports whether a commit frame was seen and every byte from the start
// of the transaction to the end of that frame has been written.
func (w *walState) ready() bool {
	if w.commitEnd == 0 {
		return false
	}
	for _, sp := range w.covered {
		if sp.lo <= w.txnStart && sp.hi >= w.commitEnd {
			return true
		}
	}
	return false
}

// isFixup reports whether a header write at fo, before the open transaction,
// rewrites a frame of the last committed one with the same page.
func (w *walState) isFixup(fo int64, pgno uint32) bool {
	if fo < w.lastStart {
		return false
	}
	i := (fo - w.lastStart) / w.frameSize()
	return i < int64(len(w.lastSlots)) && w.lastSlots[i] == pgno
}

// pending maps each page written by the open transaction, up to and
// including the commit frame at commitOff, to its newest frame.
func (w *walState) pending(commitOff int64) frameMap {
	m := make(frameMap, len(w.slots))
	fs := w.frameSize()
	for i, pgno := range w.slots {
		fo := w.txnStart + int64(i)*fs
		if fo > commitOff {
			break
		}
		if pgno != 0 {
			m[pgno] = w.frameNo(fo)
		}
	}
	return m
}

// WriteWAL writes data at off in the WAL file f. Frame headers are parsed as
// they pass; when the last byte of a commit frame arrives, the transaction is
// written as an LTX file before the write reaches the disk, so a crash can
// leave a committed LTX file whose WAL commit is missing (recovery rolls it
// forward) but never the reverse.
func (d *DB) WriteWAL(f *os.File, data []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := &d.wal
	end := off + int64(len(data))

	if off == 0 && len(data) >= walHeaderSize {
		magic := binary.BigEndian.Uint32(data[0:4])
		ps := binary.BigEndian.Uint32(data[8:12])
		if (magic == 0x377f0682 || magic == 0x377f0683) && ps >= 512 && ps <= 65536 && ps&(ps-1) == 0 {
			*w = walState{
				active: true, pageSize: ps,
				salt1: binary.BigEndian.Uint32(data[16:20]), salt2: binary.BigEndian.Uint32(data[20:24]),
				index: frameMap{}, txnStart: walHeaderSize,
			}
			// The database file is not the source of changes any more.
			d.touched, d.dirty = false, nil
		}
	}
	if w.active && end > walHeaderSize {
		fs := w.frameSize()
		for fo := walHeaderSize + (max(off, walHeaderSize)-walHeaderSize)/fs*fs; fo < end; fo += fs {
			h, ok := w.assemble(fo, data, off)
			if !ok {
				continue
			}
			// SQLite writes zero salts (and checksums) on frames appended after
			// an in-place rewrite and fixes them up after the commit frame.
			salt1, salt2 := binary.BigEndian.Uint32(h[8:12]), binary.BigEndian.Uint32(h[12:16])
			if (salt1 != w.salt1 || salt2 != w.salt2) && (salt1 != 0 || salt2 != 0) {
				continue // left over from an earlier generation
			}
			pgno := binary.BigEndian.Uint32(h[0:4])
			if fo < w.txnStart {
				if w.isFixup(fo, pgno) {
					continue
				}
				// SQLite rewound over frames committed here: after a crash its
				// recovery found them invalid. Start over from this frame.
				w.resync, w.txnStart, w.slots, w.covered, w.commitEnd = true, fo, nil, nil, 0
			}
			i := int((fo - w.txnStart) / fs)
			for len(w.slots) <= i {
				w.slots = append(w.slots, 0)
			}
			w.slots[i] = pgno
			if n := binary.BigEndian.Uint32(h[4:8]); n != 0 {
				w.commitEnd, w.commitSize = fo+fs, n
				w.cover(off, min(end, w.commitEnd))
				if w.ready() {
					if err := d.commitWAL(f, data, off); err != nil {
						return 0, err
					}
				}
			}
		}
		w.cover(off, end)
		if w.ready() {
			if err := d.commitWAL(f, data, off); err != nil {
				return 0, err
			}
		}
	}
	return f.WriteAt(data, off)
}

// TruncateWAL follows a truncation of the WAL; truncating to zero (after a
// checkpoint) leaves WAL mode until the next header is written.
func (d *DB) TruncateWAL(truncate func() error, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size < walHeaderSize {
		d.wal = walState{}
	} else if d.wal.active {
		for pgno, fi := range d.wal.index {
			if d.wal.frameOff(fi) >= size {
				delete(d.wal.index, pgno)
			}
		}
		if size < d.wal.txnStart {
			d.wal.resync = true
		}
		if keep := (size - d.wal.txnStart) / d.wal.frameSize(); keep < int64(len(d.wal.slots)) {
			d.wal.slots = d.wal.slots[:max(keep, 0)]
		}
	}
	return truncate()
}

// RemoveWAL follows the deletion of the WAL when the last connection closes.
func (d *DB) RemoveWAL(remove func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wal = walState{}
	return remove()
}

// ResetWAL forgets what is known about the WAL after it was replaced
// outside of SQLite's normal writes (created anew, or renamed into place).
func (d *DB) ResetWAL() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wal = walState{}
}

// SyncWAL is SQLite's fsync of the WAL: the LTX files of the transactions it
// makes durable are synced with it.
func (d *DB) SyncWAL(f *os.File) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if sdb := d.storeDB(); sdb != nil {
		return sdb.SyncHistory()
	}
	return nil
}

// commitWAL writes the pending frames as one transaction. data/off is the
// write in progress, which holds at least the end of the commit frame.
func (d *DB) commitWAL(f *os.File, data []byte, off int64) error {
	w := &d.wal
	fs := w.frameSize()
	commitOff := w.commitEnd - fs
	pending := w.pending(commitOff)
	rescan := w.resync
	for i := int64(0); i <= (commitOff-w.txnStart)/fs && !rescan; i++ {
		rescan = i >= int64(len(w.slots)) || w.slots[i] == 0
	}
	if rescan {
		// Read every frame header from the WAL itself, as SQLite's recovery
		// does: frames before the transaction are the committed ones.
		var err error
		if w.index, err = w.scanHeaders(f, data, off, walHeaderSize, w.txnStart); err != nil {
			return fmt.Errorf("commit %s: rescan wal: %w", d.name, err)
		}
		if pending, err = w.scanHeaders(f, data, off, w.txnStart, w.commitEnd); err != nil {
			return fmt.Errorf("commit %s: rescan wal: %w", d.name, err)
		}
		d.reg.log.Warn("wal rewound or reordered: resynchronising with a full transaction", "db", d.name)
	}
	defer func() {
		for pgno, fi := range pending {
			w.index[pgno] = fi
		}
		w.lastStart, w.lastSlots = w.txnStart, w.slots
		w.txnStart, w.slots, w.commitEnd, w.commitSize, w.resync = w.commitEnd, nil, 0, 0, false
		w.covered = nil
	}()

	ps := w.pageSize
	latest := d.latestReader(f, pending, data, off)
	sdb := d.storeDB()
	var prevN uint32
	full := rescan || sdb == nil || sdb.Pos().TXID == 0 || sdb.Commit() == 0 || sdb.PageSize() != ps
	if !full {
		prevN = sdb.Commit()
	}
	n := w.commitSize
	lock := ltx.LockPgno(ps)
	if full {
		chksum := ltx.EmptyChecksum
		buf := make([]byte, ps)
		for pgno := uint32(1); pgno <= n; pgno++ {
			if pgno == lock {
				continue
			}
			if err := latest(pgno, buf); err != nil {
				return fmt.Errorf("commit %s: %w", d.name, err)
			}
			chksum ^= ltx.PageChecksum(pgno, buf)
		}
		return d.write(store.Tx{PageSize: ps, Commit: n, Pages: store.AllPages(ps, n), Read: latest, Delta: chksum, Replace: true}, "wal")
	}

	// Old versions come from committed frames or the database file; the
	// pending map is not consulted for them.
	old := d.latestReader(f, nil, data, off)
	var delta sltx.Checksum
	buf := make([]byte, ps)
	var pgnos []uint32
	for pgno := range pending {
		if pgno <= n && pgno != lock {
			pgnos = append(pgnos, pgno)
		}
	}
	for pgno := prevN + 1; pgno <= n; pgno++ {
		if _, ok := pending[pgno]; !ok && pgno != lock {
			pgnos = append(pgnos, pgno) // grown without a frame: zeros
		}
	}
	sort.Slice(pgnos, func(i, j int) bool { return pgnos[i] < pgnos[j] })
	for _, pgno := range pgnos {
		if pgno <= prevN {
			if err := old(pgno, buf); err != nil {
				return fmt.Errorf("commit %s: old page %d: %w", d.name, pgno, err)
			}
			delta ^= ltx.PageChecksum(pgno, buf)
		}
		if err := latest(pgno, buf); err != nil {
			return fmt.Errorf("commit %s: page %d: %w", d.name, pgno, err)
		}
		delta ^= ltx.PageChecksum(pgno, buf)
	}
	for pgno := n + 1; pgno <= prevN; pgno++ {
		if pgno == lock {
			continue
		}
		if err := old(pgno, buf); err != nil {
			return fmt.Errorf("commit %s: truncated page %d: %w", d.name, pgno, err)
		}
		delta ^= ltx.PageChecksum(pgno, buf)
	}
	return d.write(store.Tx{PageSize: ps, Commit: n, Pages: slices.Values(pgnos), Read: latest, Delta: delta}, "wal")
}

// latestReader reads the newest version of a page: from the write in
// progress (data at off), the open transaction's frames (pending), the
// committed frames, or the database file, in that order. With pending nil,
// only committed versions are read.
func (d *DB) latestReader(walFile *os.File, pending frameMap, data []byte, off int64) ltx.ReadPageFunc {
	w := &d.wal
	ps := int64(w.pageSize)
	return func(pgno uint32, buf []byte) error {
		fi, ok := pending[pgno]
		if !ok {
			fi, ok = w.index[pgno]
		}
		if ok {
			return readOverlay(walFile, buf, w.frameOff(fi)+walFrameHeaderSize, data, off)
		}
		dbf, err := d.dbFile()
		if err != nil {
			return err
		}
		n, err := dbf.ReadAt(buf, int64(pgno-1)*ps)
		if n < len(buf) {
			clear(buf[n:]) // beyond the end of the database file: a new page
		}
		return nil
	}
}

// readOverlay reads len(buf) bytes at start from f, with the bytes of the
// write in progress (data at off) taking precedence. The kernel splits a
// frame across writes at page-cache boundaries, so a frame is often half on
// disk and half in the current write.
func readOverlay(f *os.File, buf []byte, start int64, data []byte, off int64) error {
	end := start + int64(len(buf))
	dataEnd := off + int64(len(data))
	if data == nil || start < off || end > dataEnd {
		// Some of the frame is on disk already.
		n, err := f.ReadAt(buf, start)
		if err != nil && (data == nil || off > start+int64(n) || dataEnd < end) {
			return err
		}
	}
	if data != nil && start < dataEnd && end > off {
		lo, hi := max(start, off), min(end, dataEnd)
		copy(buf[lo-start:hi-start], data[lo-off:hi-off])
	}
	return nil
}

// scanHeaders reads the frame headers in [from, to) from the WAL, with the
// write in progress (data at off) overlaid, and maps each page to its newest
// frame.
func (w *walState) scanHeaders(f *os.File, data []byte, off, from, to int64) (frameMap, error) {
	m := frameMap{}
	h := make([]byte, walFrameHeaderSize)
	for fo := from; fo+w.frameSize() <= to; fo += w.frameSize() {
		if err := readOverlay(f, h, fo, data, off); err != nil {
			return nil, err
		}
		if pgno := binary.BigEndian.Uint32(h[0:4]); pgno != 0 {
			m[pgno] = w.frameNo(fo)
		}
	}
	return m, nil
}
