package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // settles databases on demotion
	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
)

// roleHooks adapts the node's parts to role changes (cluster.Hooks).
type roleHooks struct {
	store    *store.Store
	capture  *capture.Registry
	mountDir string
	log      *slog.Logger
}

// Promoted drops capture state left from an earlier time as primary: the
// files have since been changed by applies.
func (h *roleHooks) Promoted() { h.capture.Reset() }

// Demoted brings each database file to its recorded position after writes
// stopped. A write transaction cut off by the demotion leaves a hot
// journal, or WAL frames, behind; SQLite itself (run by this process, which
// the read-only mount lets through) rolls the journal back and checkpoints
// the WAL into the database, where applies expect the data. A file that
// still differs from its position is left to a snapshot from the primary.
func (h *roleHooks) Demoted(ctx context.Context) {
	for _, db := range h.store.DBs() {
		name := db.Name()
		if err := settle(ctx, filepath.Join(h.mountDir, filepath.FromSlash(name))); err != nil {
			h.log.Warn("settling database after demotion", "db", name, "err", err)
		}
		chksum, _, err := ltx.FileChecksum(h.store.Path(name))
		if pos := db.Pos(); err != nil || chksum != pos.PostApplyChecksum {
			h.log.Warn("database differs from its position after demotion; it will be replaced by a snapshot",
				"db", name, "pos", pos, "file_checksum", chksum, "err", err)
			db.ResetPos()
		}
	}
}

func settle(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if mode == "wal" {
		var busy, logN, ckpt int
		if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logN, &ckpt); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		if busy != 0 {
			return fmt.Errorf("checkpoint: busy")
		}
	}
	return nil
}
