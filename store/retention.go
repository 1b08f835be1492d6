package store

import (
	"context"
	"os"
	"time"
)

// retentionLoop removes LTX files older than the retention period on a timer.
func (s *Store) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, db := range s.DBs() {
				if err := db.EnforceRetention(time.Now().Add(-s.cfg.Retention)); err != nil {
					s.log.Error("retention", "db", db.Name(), "err", err)
				}
			}
		}
	}
}

// EnforceRetention removes LTX files last modified before cutoff. The newest
// file is always kept because it carries the current position.
func (db *DB) EnforceRetention(cutoff time.Time) error {
	txids, err := db.History()
	if err != nil || len(txids) < 2 {
		return err
	}
	for _, txid := range txids[:len(txids)-1] {
		path := db.LTXPath(txid)
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		if fi.ModTime().After(cutoff) {
			break
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
