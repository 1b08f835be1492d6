package store

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replfs/litefs/ltx"
)

func openTestStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, Retention: time.Hour, RetentionInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newDataDir returns a data directory and the path of database a.db in it.
func newDataDir(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "files", "a.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// makeDB creates a small SQLite database at path with SQLite itself.
func makeDB(t *testing.T, path string, rows int) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := `CREATE TABLE IF NOT EXISTS t(x);
	WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?) INSERT INTO t SELECT randomblob(200) FROM n`
	if _, err := db.Exec(q, rows); err != nil {
		t.Fatal(err)
	}
}

func TestRecover(t *testing.T) {
	t.Run("ExistingDatabaseBecomesSnapshot", func(t *testing.T) {
		dir, path := newDataDir(t)
		makeDB(t, path, 100)
		s := openTestStore(t, dir)
		db := s.DB("a.db")
		if db == nil || db.Pos().TXID != 1 {
			t.Fatalf("want a.db at txid 1, got %+v", db)
		}
		want, _, _ := ltx.FileChecksum(path)
		if db.Pos().PostApplyChecksum != want {
			t.Fatalf("checksum %s, want %s", db.Pos().PostApplyChecksum, want)
		}
	})

	t.Run("RollsForwardCommittedLTX", func(t *testing.T) {
		// The node wrote the LTX file of a transaction and died before
		// SQLite's own commit reached the database file.
		dir, path := newDataDir(t)
		makeDB(t, path, 10)
		s := openTestStore(t, dir)
		before, _ := os.ReadFile(path)
		makeDB(t, path, 500) // the transaction, as SQLite would write it
		after, _ := os.ReadFile(path)
		hdr, _ := ltx.ParseDBHeader(after, int64(len(after)))
		chksum, _, _ := ltx.FileChecksum(path)
		f, _ := os.Open(path)
		if _, err := s.DB("a.db").WriteTx(Tx{PageSize: hdr.PageSize, Commit: hdr.PageN, Pages: AllPages(hdr.PageSize, hdr.PageN),
			Read: PageReader(f, hdr.PageSize), Delta: chksum, Replace: true}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		s.Close()
		if err := os.WriteFile(path, before, 0o644); err != nil { // the commit never reached the file
			t.Fatal(err)
		}
		s2 := openTestStore(t, dir)
		got, _ := os.ReadFile(path)
		if string(got) != string(after) {
			t.Fatalf("database not rolled forward to the committed transaction")
		}
		if pos := s2.DB("a.db").Pos(); pos.TXID != 2 || pos.PostApplyChecksum != chksum {
			t.Fatalf("position %s after recovery", pos)
		}
	})

	t.Run("MismatchIsAnError", func(t *testing.T) {
		dir, path := newDataDir(t)
		makeDB(t, path, 10)
		s := openTestStore(t, dir)
		s.Close()
		makeDB(t, path, 10) // changed behind the node's back
		_, err := Open(Config{Dir: dir})
		if !errors.Is(err, ErrPositionMismatch) {
			t.Fatalf("want ErrPositionMismatch, got %v", err)
		}
	})

	t.Run("IncompleteNewestLTXIsDropped", func(t *testing.T) {
		dir, path := newDataDir(t)
		makeDB(t, path, 10)
		s := openTestStore(t, dir)
		db := s.DB("a.db")
		s.Close()
		// A crash in the middle of writing transaction 2's file.
		if err := os.WriteFile(db.LTXPath(2), []byte("LTX1 partial"), 0o644); err != nil {
			t.Fatal(err)
		}
		s2 := openTestStore(t, dir)
		if pos := s2.DB("a.db").Pos(); pos.TXID != 1 {
			t.Fatalf("position %s, want txid 1", pos)
		}
		if _, err := os.Stat(db.LTXPath(2)); !os.IsNotExist(err) {
			t.Fatalf("partial ltx file was kept")
		}
	})
}

func TestHistoryDirName(t *testing.T) {
	long := strings.Repeat("x", 250) + ".db"
	for _, name := range []string{"a.db", "sub/dir/b.db", long, "sub/" + long} {
		d := historyDirName(name)
		if len(d) > 255 || strings.Contains(d, "/") {
			t.Fatalf("%q -> %q does not fit in one directory entry", name, d)
		}
	}
	if historyDirName("sub/"+long) == historyDirName(long) {
		t.Fatalf("distinct long names share a directory")
	}
}
