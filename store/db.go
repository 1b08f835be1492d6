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

	mu       sync.Mutex
	pos      sltx.Pos
	pageSize uint32
	commit   uint32 // size in pages at pos
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
	if db.sync && tx.Sync {
		if err := db.SyncHistory(); err != nil {
			return db.pos, err
		}
	}
	db.pos = sltx.NewPos(txid, post)
	db.pageSize, db.commit = tx.PageSize, tx.Commit
	return db.pos, nil
}

// SyncHistory makes every LTX file written so far durable, with their
// directory entries. One syncfs(2) of the data directory's filesystem costs
// about one journal commit, however many LTX files SQLite's fsync covers
// (in WAL mode with synchronous=NORMAL that is every transaction since the
// last checkpoint), where an fsync per file and one for the directory would
// cost one commit each.
func (db *DB) SyncHistory() error {
	if !db.sync {
		return nil
	}
	d, err := os.Open(db.ltxDir)
	if err != nil {
		return fmt.Errorf("open history dir for sync: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync history of %s: %w", db.name, err)
	}
	return nil
}

// History lists the LTX files of the database in TXID order.
func (db *DB) History() ([]sltx.TXID, error) {
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
