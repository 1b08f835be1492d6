package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// applyImages returns successive images of one database, made by SQLite:
// created, grown, changed in place, shrunk by VACUUM, and rewritten with
// another page size.
func applyImages(t *testing.T) [][]byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var imgs [][]byte
	for _, q := range []string{
		`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
		 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20) INSERT INTO t (v) SELECT randomblob(300) FROM n`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) INSERT INTO t (v) SELECT randomblob(500) FROM n`,
		`UPDATE t SET v = randomblob(300) WHERE id % 7 = 0`,
		`DELETE FROM t WHERE id > 40; VACUUM`,
		`PRAGMA page_size = 1024; VACUUM`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 50) INSERT INTO t (v) SELECT randomblob(800) FROM n`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, b)
	}
	return imgs
}

// shape returns an image's page size and page count.
func shape(t *testing.T, img []byte) (uint32, uint32) {
	t.Helper()
	hdr, err := ltx.ParseDBHeader(img, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	return hdr.PageSize, hdr.PageN
}

// imageChecksum is the rolling checksum of a whole image.
func imageChecksum(t *testing.T, img []byte) sltx.Checksum {
	t.Helper()
	ps, n := shape(t, img)
	c, err := ltx.DatabaseChecksum(bytes.NewReader(img), ps, n)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chainTx is one LTX file of a chain and the position it leads to.
type chainTx struct {
	path string
	pos  sltx.Pos
	img  []byte
}

// writeTxLTX encodes the transaction that turns prev into img as TXID txid
// with the given checksums: every page for the first transaction or a page
// size change, otherwise the pages that differ.
func writeTxLTX(t *testing.T, path string, txid sltx.TXID, prev, img []byte, pre, post sltx.Checksum) {
	t.Helper()
	ps, n := shape(t, img)
	var pgnos []uint32
	full := txid == 1
	if !full {
		pps, _ := shape(t, prev)
		full = pps != ps
	}
	for pgno := uint32(1); pgno <= n; pgno++ {
		off := int64(pgno-1) * int64(ps)
		page := img[off : off+int64(ps)]
		if full || off+int64(ps) > int64(len(prev)) || !bytes.Equal(prev[off:off+int64(ps)], page) {
			pgnos = append(pgnos, pgno)
		}
	}
	th := ltx.TxHeader{TXID: txid, PageSize: ps, Commit: n, PreApply: pre, PostApply: post, Timestamp: time.Unix(1700000000, 0)}
	read := func(pgno uint32, buf []byte) error {
		copy(buf, img[int64(pgno-1)*int64(ps):])
		return nil
	}
	if _, err := ltx.WriteFile(path, th, slices.Values(pgnos), read, false); err != nil {
		t.Fatal(err)
	}
}

// buildChain writes one LTX file per image, each following the previous.
func buildChain(t *testing.T, imgs [][]byte) []chainTx {
	t.Helper()
	dir := t.TempDir()
	var chain []chainTx
	prev, pre := []byte(nil), ltx.EmptyChecksum
	for i, img := range imgs {
		txid := sltx.TXID(i + 1)
		post := imageChecksum(t, img)
		path := filepath.Join(dir, sltx.FormatFilename(txid, txid))
		writeTxLTX(t, path, txid, prev, img, pre, post)
		chain = append(chain, chainTx{path: path, pos: sltx.NewPos(txid, post), img: img})
		prev, pre = img, post
	}
	return chain
}

func openApplyStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Config{Dir: t.TempDir(), SkipSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// applyFile copies an LTX file to the database's incoming path, as the
// replica receives one, and applies it.
func applyFile(t *testing.T, s *Store, name, path string) (sltx.Pos, error) {
	t.Helper()
	db, err := s.CreateDB(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db.IncomingPath(), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return s.ApplyLTX(context.Background(), name, db.IncomingPath())
}

// mustApply applies chain entries and checks each lands on its position,
// with the file byte-identical to the image and checksumming to it.
func mustApply(t *testing.T, s *Store, name string, txs ...chainTx) {
	t.Helper()
	for _, tx := range txs {
		pos, err := applyFile(t, s, name, tx.path)
		if err != nil {
			t.Fatalf("apply %s: %v", filepath.Base(tx.path), err)
		}
		if pos != tx.pos || s.DB(name).Pos() != tx.pos {
			t.Fatalf("apply %s: position %s (db %s), want %s", filepath.Base(tx.path), pos, s.DB(name).Pos(), tx.pos)
		}
		got, err := os.ReadFile(s.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tx.img) {
			t.Fatalf("apply %s: database (%d bytes) is not the image (%d bytes)", filepath.Base(tx.path), len(got), len(tx.img))
		}
		if c, _, err := ltx.FileChecksum(s.Path(name)); err != nil || c != tx.pos.PostApplyChecksum {
			t.Fatalf("apply %s: file checksum %s (%v), want %s", filepath.Base(tx.path), c, err, tx.pos.PostApplyChecksum)
		}
		if _, err := os.Stat(s.DB(name).LTXPath(tx.pos.TXID)); err != nil {
			t.Fatalf("apply %s: not kept in the history: %v", filepath.Base(tx.path), err)
		}
	}
}

// readOrNil reads a file, nil if it does not exist.
func readOrNil(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

// TestApplyLTXChain applies a chain that grows, changes, shrinks and
// changes the page size of a database: every step reaches its position and
// the database file is the image SQLite made, byte for byte.
func TestApplyLTXChain(t *testing.T) {
	imgs := applyImages(t)
	if ps0, _ := shape(t, imgs[0]); ps0 == 1024 {
		t.Fatal("test images do not change page size")
	}
	chain := buildChain(t, imgs)
	s := openApplyStore(t)
	mustApply(t, s, "a.db", chain...)
	// The history ends with the last file. (A page size change is applied
	// as a full rewrite, which drops the files before it.)
	txids, err := s.DB("a.db").History()
	if err != nil || len(txids) == 0 || txids[len(txids)-1] != chain[len(chain)-1].pos.TXID {
		t.Fatalf("history %v (%v), want it to end at txid %d", txids, err, len(chain))
	}
}

// TestApplyLTXRefused feeds LTX files that must not be applied at the
// database's position. Each is refused with the right error, leaves the
// database file and position as they were, and the right next file still
// applies afterwards.
func TestApplyLTXRefused(t *testing.T) {
	imgs := applyImages(t)
	chain := buildChain(t, imgs)
	dir := t.TempDir()

	// variant writes a modified copy of chain[i]'s file.
	variant := func(name string, i int, f func([]byte) []byte) string {
		b, err := os.ReadFile(chain[i].path)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, f(bytes.Clone(b)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte {
			if off < 0 {
				off += len(b)
			}
			b[off] ^= 0x01
			return b
		}
	}
	cut := func(n int) func([]byte) []byte {
		return func(b []byte) []byte {
			if n < 0 {
				n += len(b)
			}
			return b[:n]
		}
	}
	// encoded writes TXID 2 with chosen checksums over chain[0]'s image.
	encoded := func(name string, pre, post sltx.Checksum) string {
		path := filepath.Join(dir, name)
		writeTxLTX(t, path, 2, imgs[0], imgs[1], pre, post)
		return path
	}

	for _, tt := range []struct {
		name    string
		applied int    // chain entries applied first
		file    string // the refused file
		// snapshot: the error wraps ErrNeedSnapshot; otherwise it says the
		// file failed verification (or could not be read whole).
		snapshot bool
		msg      string
	}{
		// TXID 2 whose pre-apply checksum is not the database's.
		{name: "PreApplyMismatch", applied: 1, file: encoded("pre.ltx", chain[2].pos.PostApplyChecksum, chain[1].pos.PostApplyChecksum), snapshot: true},
		// TXID 2 that promises a checksum its pages do not produce.
		{name: "PostApplyMismatch", applied: 1, file: encoded("post.ltx", chain[0].pos.PostApplyChecksum, chain[3].pos.PostApplyChecksum), snapshot: true},
		// TXID 3 on a database at TXID 1.
		{name: "TXIDGap", applied: 1, file: chain[2].path, snapshot: true},
		// TXID 2 again on a database at TXID 2.
		{name: "AlreadyApplied", applied: 2, file: chain[1].path, snapshot: true},
		// TXID 2 on an empty database: the first file must be a snapshot.
		{name: "FirstNotSnapshot", applied: 0, file: chain[1].path, snapshot: true},
		// One flipped bit anywhere: header, page header, page data, page
		// index, trailer's post-apply checksum, trailer's file checksum.
		{name: "CorruptHeaderTXID", applied: 1, file: variant("c1.ltx", 1, flip(23)), msg: "verify ltx"},
		{name: "CorruptPageHeader", applied: 1, file: variant("c2.ltx", 1, flip(sltx.HeaderSize+3)), msg: "verify ltx"},
		{name: "CorruptPageData", applied: 1, file: variant("c3.ltx", 1, flip(150)), msg: "verify ltx"},
		{name: "CorruptLastPage", applied: 1, file: variant("c4.ltx", 1, flip(-sltx.TrailerSize-40)), msg: "verify ltx"},
		{name: "CorruptPostApply", applied: 1, file: variant("c5.ltx", 1, flip(-12)), msg: "verify ltx"},
		{name: "CorruptFileChecksum", applied: 1, file: variant("c6.ltx", 1, flip(-1)), msg: "verify ltx"},
		// Cut anywhere: in the header, half-way, one byte short.
		{name: "TruncatedHeader", applied: 1, file: variant("t1.ltx", 1, cut(50)), msg: "verify ltx"},
		{name: "TruncatedHalf", applied: 1, file: variant("t2.ltx", 1, func(b []byte) []byte { return b[:len(b)/2] }), msg: "verify ltx"},
		{name: "TruncatedLastByte", applied: 1, file: variant("t3.ltx", 1, cut(-1)), msg: "verify ltx"},
		{name: "Empty", applied: 1, file: variant("t4.ltx", 1, cut(0)), msg: "verify ltx"},
		// Bytes after the trailer are not part of a file.
		{name: "TrailingGarbage", applied: 1, file: variant("g.ltx", 1, func(b []byte) []byte { return append(b, 0) }), msg: "verify ltx"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openApplyStore(t)
			mustApply(t, s, "a.db", chain[:tt.applied]...)
			before := readOrNil(t, s.Path("a.db"))
			var pos sltx.Pos
			if db := s.DB("a.db"); db != nil {
				pos = db.Pos()
			}

			_, err := applyFile(t, s, "a.db", tt.file)
			switch {
			case err == nil:
				t.Fatal("applied")
			case tt.snapshot && !errors.Is(err, ErrNeedSnapshot):
				t.Fatalf("error %v, want ErrNeedSnapshot", err)
			case !tt.snapshot && (errors.Is(err, ErrNeedSnapshot) || !strings.Contains(err.Error(), tt.msg)):
				t.Fatalf("error %v, want a %q error", err, tt.msg)
			}
			t.Logf("refused: %v", err)
			if got := readOrNil(t, s.Path("a.db")); !bytes.Equal(got, before) {
				t.Fatalf("database changed by a refused file (%d -> %d bytes)", len(before), len(got))
			}
			if got := s.DB("a.db").Pos(); got != pos {
				t.Fatalf("position moved from %s to %s", pos, got)
			}
			if _, err := os.Stat(s.DB("a.db").LTXPath(pos.TXID + 1)); !os.IsNotExist(err) {
				t.Fatalf("refused file entered the history: %v", err)
			}
			// Nothing is stuck: the rest of the chain applies.
			mustApply(t, s, "a.db", chain[tt.applied:]...)
		})
	}
}

// TestReceiveSnapshot checks that a snapshot image is only handed over when
// its checksum is the one announced, and that a refused image changes
// nothing: no database change, no temporary file left.
func TestReceiveSnapshot(t *testing.T) {
	imgs := applyImages(t)
	chain := buildChain(t, imgs)
	spOf := func(i int) SnapshotPos {
		ps, n := shape(t, imgs[i])
		return SnapshotPos{TXID: chain[i].pos.TXID, Checksum: chain[i].pos.PostApplyChecksum, PageSize: ps, Commit: n}
	}
	flipped := bytes.Clone(imgs[2])
	flipped[len(flipped)/2] ^= 0x80
	badSize := spOf(2)
	badSize.PageSize = 1000
	wrongSum := spOf(2)
	wrongSum.Checksum = chain[1].pos.PostApplyChecksum

	for _, tt := range []struct {
		name     string
		sp       SnapshotPos
		r        io.Reader
		checksum bool // the error must wrap ltx.ErrChecksumMismatch
	}{
		{"CorruptByte", spOf(2), bytes.NewReader(flipped), true},
		{"WrongChecksum", wrongSum, bytes.NewReader(imgs[2]), true},
		{"ShortImage", spOf(2), bytes.NewReader(imgs[2][:len(imgs[2])-100]), false},
		{"CutConnection", spOf(2), io.MultiReader(bytes.NewReader(imgs[2][:5000]), errReader{}), false},
		{"InvalidPageSize", badSize, bytes.NewReader(imgs[2]), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openApplyStore(t)
			mustApply(t, s, "a.db", chain[0])
			before := readOrNil(t, s.Path("a.db"))
			img, err := s.ReceiveSnapshot("a.db", tt.sp, tt.r)
			if err == nil {
				img.Close()
				t.Fatal("corrupt snapshot accepted")
			}
			if tt.checksum && !errors.Is(err, ltx.ErrChecksumMismatch) {
				t.Fatalf("error %v, want ltx.ErrChecksumMismatch", err)
			}
			t.Logf("refused: %v", err)
			if got := readOrNil(t, s.Path("a.db")); !bytes.Equal(got, before) {
				t.Fatal("database changed by a refused snapshot")
			}
			if pos := s.DB("a.db").Pos(); pos != chain[0].pos {
				t.Fatalf("position moved to %s", pos)
			}
			if ents, _ := os.ReadDir(s.TmpDir()); len(ents) != 0 {
				t.Fatalf("refused snapshot left %v in the tmp dir", ents)
			}
			mustApply(t, s, "a.db", chain[1:]...)
		})
	}

	// A sound image replaces the database and the chain continues after it.
	t.Run("Good", func(t *testing.T) {
		s := openApplyStore(t)
		mustApply(t, s, "a.db", chain[0])
		img, err := s.ReceiveSnapshot("a.db", spOf(2), bytes.NewReader(imgs[2]))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ApplySnapshot(context.Background(), "a.db", spOf(2), img); err != nil {
			t.Fatal(err)
		}
		if got := readOrNil(t, s.Path("a.db")); !bytes.Equal(got, imgs[2]) {
			t.Fatal("database is not the snapshot image")
		}
		if pos := s.DB("a.db").Pos(); pos != chain[2].pos {
			t.Fatalf("position %s, want %s", pos, chain[2].pos)
		}
		if ents, _ := os.ReadDir(s.TmpDir()); len(ents) != 0 {
			t.Fatalf("snapshot left %v in the tmp dir", ents)
		}
		mustApply(t, s, "a.db", chain[3:]...)
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }
