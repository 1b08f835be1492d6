package store

import (
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
	"golang.org/x/sys/unix"
)

// DB is one replicated database: its position and where its history lives.
type DB struct {
	name   string
	ltxDir string
	sync   bool
	nodeID uint64
	notify func() // tells the store's watchers the position moved

	applyMu sync.Mutex // serialises applies on a replica
	file    *os.File   // read-write handle for applies, opened on demand

	mu       sync.Mutex
	pos      sltx.Pos
	pageSize uint32
	commit   uint32       // size in pages at pos
	syncedTo sltx.TXID    // LTX files up to this one are known durable
	pending  []pendingLTX // applied on a replica, not yet written to the history
	histMu   sync.Mutex   // serialises writing pending files with removing history
}

// Tx is a committed transaction handed over by the capture layer.
type Tx struct {
	PageSize uint32
	Commit   uint32           // database size in pages after the transaction
	Pages    iter.Seq[uint32] // changed pages, ascending, lock page excluded
	Read     ltx.ReadPageFunc
	// Delta is the XOR of the checksums of the old and new versions of every
	// changed page and of the old version of every page cut off by a shrink.
	// When Replace is set it is the full checksum of the new database instead.
	Delta   sltx.Checksum
	Replace bool
	// Sync makes the LTX file durable before Commit returns; the capture layer
	// sets it when SQLite itself asked for durability of this commit.
	Sync bool
}

// Name is the database's path relative to the mount root.
func (db *DB) Name() string { return db.name }

// Pos is the position of the last committed transaction.
func (db *DB) Pos() sltx.Pos {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.pos
}

// PageSize and Commit describe the database at Pos.
func (db *DB) PageSize() uint32 { db.mu.Lock(); defer db.mu.Unlock(); return db.pageSize }

// Commit is the database size in pages at Pos.
func (db *DB) Commit() uint32 { db.mu.Lock(); defer db.mu.Unlock(); return db.commit }

// LTXPath is the path of the LTX file holding transaction txid.
func (db *DB) LTXPath(txid sltx.TXID) string {
	return filepath.Join(db.ltxDir, sltx.FormatFilename(txid, txid))
}

// WriteTx encodes tx as the next transaction and advances the position. The
// first transaction of a database is a snapshot and must hold every page.
func (db *DB) WriteTx(tx Tx) (sltx.Pos, error) {
	pos, err := db.writeTx(tx)
	db.notify() // outside db.mu: the store takes its own lock first elsewhere
	return pos, err
}

func (db *DB) writeTx(tx Tx) (sltx.Pos, error) {
	db.mu.Lock()
	defer db.mu.Unlock()

	txid := db.pos.TXID + 1
	pre := db.pos.PostApplyChecksum
	if txid == 1 {
		pre = ltx.EmptyChecksum
	}
	post := sltx.ChecksumFlag | (pre ^ tx.Delta)
	if tx.Replace {
		post = sltx.ChecksumFlag | tx.Delta
	}
	if tx.Commit == 0 {
		post = ltx.EmptyChecksum
	}
	th := ltx.TxHeader{
		TXID: txid, PageSize: tx.PageSize, Commit: tx.Commit,
		PreApply: pre, PostApply: post, Timestamp: time.Now(), NodeID: db.nodeID,
	}
	path := db.LTXPath(txid)
	if _, err := ltx.WriteFile(path, th, tx.Pages, tx.Read, false); err != nil {
		return db.pos, fmt.Errorf("write ltx for %s txid %s: %w", db.name, txid, err)
	}
	db.pos = sltx.NewPos(txid, post)
	db.pageSize, db.commit = tx.PageSize, tx.Commit
	if tx.Sync {
		if err := db.syncLocked(false); err != nil {
			return db.pos, err
		}
	}
	return db.pos, nil
}

// SyncHistory makes every LTX file written so far durable, with their
// directory entries. A few files are fsynced one by one; after many (in WAL
// mode with synchronous=NORMAL, SQLite syncs only at checkpoints, so every
// transaction since the last one is pending) one syncfs(2) of the data
// directory's filesystem costs less than an fsync per file.
func (db *DB) SyncHistory() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.syncLocked(false)
}

// SyncAppliedHistory is SyncHistory for a replica's batches: always one
// fsync per file, never syncfs(2), which would flush the whole filesystem
// (other nodes' files included) and stall it. The first fsync commits the
// journal for all the new files, so the others cost little.
//
// db.mu is not held while files are written and synced, so applies go on
// meanwhile; histMu keeps removeHistory from racing with the writes.
func (db *DB) SyncAppliedHistory() error {
	db.histMu.Lock()
	defer db.histMu.Unlock()
	if err := db.writePending(); err != nil {
		return err
	}
	db.mu.Lock()
	from, to := db.syncedTo, db.pos.TXID
	db.mu.Unlock()
	if !db.sync || from >= to {
		return nil
	}
	for txid := from + 1; txid <= to; txid++ {
		if err := fsyncPath(db.LTXPath(txid)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sync ltx of %s: %w", db.name, err)
		}
	}
	if err := fsyncPath(db.ltxDir); err != nil {
		return fmt.Errorf("sync history dir of %s: %w", db.name, err)
	}
	db.mu.Lock()
	if to > db.syncedTo && to <= db.pos.TXID {
		db.syncedTo = to
	}
	db.mu.Unlock()
	return nil
}

// WriteAppliedHistory writes the history files of applied transactions
// without syncing them: enough for a restart after the process is killed.
func (db *DB) WriteAppliedHistory() error {
	db.histMu.Lock()
	defer db.histMu.Unlock()
	return db.writePending()
}

// writePending writes pending history files; histMu is held, db.mu is not
// held during the writes.
func (db *DB) writePending() error {
	db.mu.Lock()
	pending := db.pending
	db.pending = nil
	db.mu.Unlock()
	for _, p := range pending {
		if err := writeFileNoSync(p.path, p.data); err != nil {
			return fmt.Errorf("write applied transaction to history: %w", err)
		}
	}
	return nil
}

// maxFileSyncs is how many pending LTX files are fsynced individually.
const maxFileSyncs = 8

func (db *DB) syncLocked(perFile bool) error {
	if err := db.flushPendingLocked(); err != nil {
		return err
	}
	if !db.sync || db.syncedTo >= db.pos.TXID {
		return nil
	}
	if db.pos.TXID-db.syncedTo > maxFileSyncs && !perFile {
		d, err := os.Open(db.ltxDir)
		if err != nil {
			return fmt.Errorf("open history dir for sync: %w", err)
		}
		defer d.Close()
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			return fmt.Errorf("sync history of %s: %w", db.name, err)
		}
		db.syncedTo = db.pos.TXID
		return nil
	}
	for txid := db.syncedTo + 1; txid <= db.pos.TXID; txid++ {
		if err := fsyncPath(db.LTXPath(txid)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sync ltx of %s: %w", db.name, err)
		}
	}
	if err := fsyncPath(db.ltxDir); err != nil {
		return fmt.Errorf("sync history dir of %s: %w", db.name, err)
	}
	db.syncedTo = db.pos.TXID
	return nil
}

func fsyncPath(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// History lists the LTX files of the database in TXID order.
func (db *DB) History() ([]sltx.TXID, error) {
	if err := db.flushPending(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(db.ltxDir)
	if err != nil {
		return nil, fmt.Errorf("list history of %s: %w", db.name, err)
	}
	var txids []sltx.TXID
	for _, e := range ents {
		minTXID, maxTXID, err := sltx.ParseFilename(e.Name())
		if err != nil || minTXID != maxTXID {
			continue
		}
		txids = append(txids, minTXID)
	}
	sort.Slice(txids, func(i, j int) bool { return txids[i] < txids[j] })
	return txids, nil
}
