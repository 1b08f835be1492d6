package tests

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// replayer rebuilds a database from its LTX history, one new file at a time.
type replayer struct {
	t    *testing.T
	dir  string
	f    *os.File
	next sltx.TXID
	pos  sltx.Pos
}

func newReplayer(t *testing.T, ltxDir string) *replayer {
	f, err := os.Create(filepath.Join(t.TempDir(), "replay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &replayer{t: t, dir: ltxDir, f: f, next: 1}
}

// catchUp applies every LTX file written since the last call, verifying each
// file's checksums and its pre-apply checksum against the replayed database.
func (r *replayer) catchUp() int {
	r.t.Helper()
	n := 0
	for {
		path := filepath.Join(r.dir, sltx.FormatFilename(r.next, r.next))
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return n
		}
		hdr, trailer, err := ltx.ApplyFile(path, r.f, r.next > 1)
		if err != nil {
			r.t.Fatalf("replay txid %d: %v", r.next, err)
		}
		if r.next > 1 && hdr.PreApplyChecksum != r.pos.PostApplyChecksum {
			r.t.Fatalf("txid %d pre-apply %s does not follow %s", r.next, hdr.PreApplyChecksum, r.pos)
		}
		r.pos = sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum)
		r.next++
		n++
	}
}

func (r *replayer) bytes() []byte {
	b, err := os.ReadFile(r.f.Name())
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func posString(p sltx.Pos) string {
	return fmt.Sprintf("%016x/%016x", uint64(p.TXID), uint64(p.PostApplyChecksum))
}

// TestCommitsBecomeLTX runs many transactions of every kind in each journal
// mode and checks, after each one, that the LTX history replays to a file
// byte-identical to the database, that the position file agrees, that a
// rollback writes nothing, and that a WAL checkpoint changes no position.
func TestCommitsBecomeLTX(t *testing.T) {
	for _, mode := range []string{"delete", "truncate", "persist", "wal"} {
		t.Run(mode, func(t *testing.T) {
			n := newNode(t)
			n.Start()
			name := "db-" + mode + ".db"
			db := openDB(t, n.Path(name), mode)
			mustExec(t, db, `CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`)
			rp := newReplayer(t, n.LTXDir(name))
			rng := rand.New(rand.NewSource(int64(len(mode))))

			// check verifies the database against its history after a step.
			// wantNew is the number of LTX files the step must add (-1: any).
			// A rolled-back transaction may still leave changed bytes in pages
			// that were free when it began, because SQLite does not journal
			// those; shipping them keeps replicas byte-identical, so a rollback
			// may add one LTX file, but only of freelist leaf pages.
			check := func(step string, wantNew int) {
				t.Helper()
				if mode == "wal" {
					before := n.Pos(name)
					var busy, a, b int
					if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &a, &b); err != nil || busy != 0 {
						t.Fatalf("%s: checkpoint: busy=%d err=%v", step, busy, err)
					}
					if after := n.Pos(name); after != before {
						t.Fatalf("%s: checkpoint moved position %s -> %s", step, before, after)
					}
				}
				prev := rp.next
				got := rp.catchUp()
				if strings.HasSuffix(step, "rollback") && got == 1 {
					free := freelistLeaves(t, n.BackingPath(name))
					for _, pgno := range ltxPages(filepath.Join(rp.dir, sltx.FormatFilename(prev, prev))) {
						if !free[pgno] {
							t.Fatalf("%s: rollback changed page %d, which is not a free page", step, pgno)
						}
					}
					got = 0
				}
				if wantNew >= 0 && got != wantNew {
					var info []string
					for txid := prev; txid < rp.next; txid++ {
						h, tr, _ := ltx.Verify(filepath.Join(rp.dir, sltx.FormatFilename(txid, txid)))
						info = append(info, fmt.Sprintf("txid %d commit=%d pre=%s post=%s pages=%v", txid, h.Commit, h.PreApplyChecksum, tr.PostApplyChecksum, ltxPages(filepath.Join(rp.dir, sltx.FormatFilename(txid, txid)))))
					}
					t.Fatalf("%s: %d new LTX files, want %d: %s", step, got, wantNew, strings.Join(info, "; "))
				}
				want, err := os.ReadFile(n.BackingPath(name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(rp.bytes(), want) {
					t.Fatalf("%s: replayed history differs from database (%d vs %d bytes)", step, len(rp.bytes()), len(want))
				}
				if pos := n.Pos(name); pos != posString(rp.pos) {
					t.Fatalf("%s: %s-pos is %s, history ends at %s", step, name, pos, posString(rp.pos))
				}
			}
			check("create", -1)

			for i := 0; i < 120; i++ {
				step := fmt.Sprintf("tx %d", i)
				switch op := rng.Intn(10); {
				case op < 4:
					tx := mustBegin(t, db)
					for j, k := 0, 1+rng.Intn(20); j < k; j++ {
						mustTxExec(t, tx, `INSERT INTO t(v) VALUES(?)`, randBlob(rng, 50+rng.Intn(900)))
					}
					mustCommit(t, tx)
					check(step+" insert", 1)
				case op < 6:
					mustExec(t, db, `UPDATE t SET v = ? WHERE id % 7 = ?`, randBlob(rng, 200), rng.Intn(7))
					check(step+" update", -1)
				case op < 7:
					mustExec(t, db, `DELETE FROM t WHERE id % 5 = ?`, rng.Intn(5))
					check(step+" delete", -1)
				case op < 8:
					// Big enough to spill SQLite's page cache mid-transaction.
					mustExec(t, db, `PRAGMA cache_size = 20`)
					tx := mustBegin(t, db)
					for j := 0; j < 400; j++ {
						mustTxExec(t, tx, `INSERT INTO t(v) VALUES(?)`, randBlob(rng, 1000))
					}
					mustCommit(t, tx)
					mustExec(t, db, `PRAGMA cache_size = -2000`)
					check(step+" spill", 1)
				case op < 9:
					mustExec(t, db, `PRAGMA cache_size = 20`)
					tx := mustBegin(t, db)
					for j := 0; j < 300; j++ {
						mustTxExec(t, tx, `INSERT INTO t(v) VALUES(?)`, randBlob(rng, 1000))
					}
					mustTxExec(t, tx, `DELETE FROM t WHERE id % 3 = 0`)
					if err := tx.Rollback(); err != nil {
						t.Fatal(err)
					}
					mustExec(t, db, `PRAGMA cache_size = -2000`)
					check(step+" rollback", 0)
				default:
					t.Logf("%s: vacuum at %s", step, n.Pos(name))
					mustExec(t, db, `VACUUM`)
					check(step+" vacuum", -1)
				}
			}
			var ok string
			if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
				t.Fatalf("integrity_check: %q %v", ok, err)
			}
			db.Close()
			n.Stop()
			if errs := n.Errors(); len(errs) > 0 {
				t.Fatalf("node logged errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}

func randBlob(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	rng.Read(b)
	return b
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func mustBegin(t *testing.T, db *sql.DB) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func mustTxExec(t *testing.T, tx *sql.Tx, q string, args ...any) {
	t.Helper()
	if _, err := tx.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func mustCommit(t *testing.T, tx *sql.Tx) {
	t.Helper()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// ltxPages lists the page numbers in an LTX file, for failure messages.
func ltxPages(path string) []uint32 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	dec := sltx.NewDecoder(f)
	if dec.DecodeHeader() != nil {
		return nil
	}
	var out []uint32
	var ph sltx.PageHeader
	buf := make([]byte, dec.Header().PageSize)
	for dec.DecodePage(&ph, buf) == nil {
		out = append(out, ph.Pgno)
	}
	return out
}

// freelistLeaves returns the freelist leaf pages of a database file.
func freelistLeaves(t *testing.T, path string) map[uint32]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := uint32(binary.BigEndian.Uint16(b[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	leaves := map[uint32]bool{}
	for trunk := binary.BigEndian.Uint32(b[32:36]); trunk != 0; {
		p := b[(trunk-1)*pageSize : trunk*pageSize]
		n := binary.BigEndian.Uint32(p[4:8])
		for i := uint32(0); i < n; i++ {
			leaves[binary.BigEndian.Uint32(p[8+4*i:])] = true
		}
		trunk = binary.BigEndian.Uint32(p[0:4])
	}
	return leaves
}
