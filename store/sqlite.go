package store

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"

	_ "github.com/mattn/go-sqlite3" // SQLite performs crash recovery of database files
)

// sqliteRecover lets SQLite itself roll back a hot journal or recover and
// checkpoint a WAL, so the database file alone holds the committed state. The
// node is not mounted yet, so nothing else has the file open.
func sqliteRecover(path string) error {
	_, jerr := os.Stat(path + "-journal")
	_, werr := os.Stat(path + "-wal")
	if jerr != nil && werr != nil {
		return nil
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=rw")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite recovery: %w", err)
	}
	if werr == nil {
		var busy, logN, ckptN int
		if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logN, &ckptN); err != nil {
			return fmt.Errorf("sqlite checkpoint: %w", err)
		}
		if busy != 0 {
			return fmt.Errorf("sqlite checkpoint: busy")
		}
	}
	return db.Close()
}
