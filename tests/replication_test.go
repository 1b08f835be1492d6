package tests

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
)

// newCluster starts a static primary and n replicas following it.
func newCluster(t *testing.T, replicas int, data string) (*Node, []*Node) {
	t.Helper()
	primary := newNodeWith(t, NodeConfig{Hostname: "primary", Candidate: true, Data: data})
	primary.Start()
	var rs []*Node
	for i := 0; i < replicas; i++ {
		r := newNodeWith(t, NodeConfig{Hostname: fmt.Sprintf("replica%d", i+1), PrimaryURL: primary.URL(), Data: data})
		r.Start()
		rs = append(rs, r)
	}
	return primary, rs
}

// waitCaughtUp waits until every replica's <db>-pos equals the primary's.
func waitCaughtUp(t *testing.T, primary *Node, name string, replicas ...*Node) {
	t.Helper()
	waitCaughtUpWithin(t, 30*time.Second, primary, name, replicas...)
}

// waitCaughtUpWithin is waitCaughtUp with a deadline, for tests whose
// replicas are kept busy.
func waitCaughtUpWithin(t *testing.T, timeout time.Duration, primary *Node, name string, replicas ...*Node) {
	t.Helper()
	want := primary.Pos(name)
	deadline := time.Now().Add(timeout)
	for _, r := range replicas {
		for {
			b, err := os.ReadFile(r.Path(name + "-pos"))
			if err == nil && strings.TrimSpace(string(b)) == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s-pos = %q (err %v), primary %s\nreplica log:\n%s", r.Dir, name, b, err, want, r.Log())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// export fetches a consistent image of a database from a node's API.
func export(t *testing.T, n *Node, name string) ([]byte, string) {
	t.Helper()
	resp, err := http.Get(n.URL() + "/export?name=" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("export %s: %s %v %s", name, resp.Status, err, b)
	}
	return b, resp.Header.Get("Litefs-Pos")
}

// assertIdentical checks a replica's database file is byte for byte the
// primary's database at the same position, and sound.
func assertIdentical(t *testing.T, primary, replica *Node, name string) {
	t.Helper()
	want, pos := export(t, primary, name)
	got, err := os.ReadFile(replica.BackingPath(name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s on %s differs from the primary at %s (%d vs %d bytes)", name, replica.Dir, pos, len(got), len(want))
	}
	if rp := replica.Pos(name); rp != strings.ReplaceAll(pos, "/", "/") && !strings.EqualFold(rp, pos) {
		t.Fatalf("replica pos %s, primary export pos %s", rp, pos)
	}
	db, err := sql.Open("sqlite3", "file:"+replica.Path(name)+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check on replica: %q %v", ok, err)
	}
}

// randomTxs runs n random transactions: inserts, updates, deletes and large
// transactions that spill SQLite's cache.
func randomTxs(t *testing.T, db *sql.DB, rng *rand.Rand, n int) {
	t.Helper()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		var q string
		switch rng.Intn(5) {
		case 0, 1:
			q = fmt.Sprintf(`INSERT INTO t (v) VALUES (randomblob(%d))`, rng.Intn(3000))
		case 2:
			q = `UPDATE t SET v = randomblob(100) WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 3)`
		case 3:
			q = `DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 2)`
		case 4:
			q = fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < %d) INSERT INTO t (v) SELECT randomblob(500) FROM s`, 50+rng.Intn(400))
		}
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestReplicationToTwoReplicas(t *testing.T) {
	for _, mode := range []string{"delete", "wal"} {
		t.Run(mode, func(t *testing.T) {
			primary, replicas := newCluster(t, 2, "")
			rng := rand.New(rand.NewSource(1))
			db := openDB(t, primary.Path("app.db"), mode)
			randomTxs(t, db, rng, 150)

			// A database created later, and one created then deleted.
			other := openDB(t, primary.Path("other.db"), mode)
			randomTxs(t, other, rng, 20)
			gone := openDB(t, primary.Path("gone.db"), mode)
			randomTxs(t, gone, rng, 5)
			waitCaughtUp(t, primary, "gone.db", replicas...)
			gone.Close()
			for _, suffix := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(primary.Path("gone.db" + suffix))
			}
			randomTxs(t, db, rng, 50)

			for _, name := range []string{"app.db", "other.db"} {
				waitCaughtUp(t, primary, name, replicas...)
				for _, r := range replicas {
					assertIdentical(t, primary, r, name)
				}
			}
			for _, r := range replicas {
				waitGone(t, r.Path("gone.db"))
				if b, err := os.ReadFile(r.Path(".primary")); err != nil || strings.TrimSpace(string(b)) != "primary" {
					t.Fatalf(".primary = %q, %v", b, err)
				}
				lag := readLag(t, r)
				if lag < 0 || lag > 5000 {
					t.Fatalf(".lag = %d ms", lag)
				}
				assertReadOnly(t, r, "app.db", mode)
				if errs := r.Errors(); len(errs) > 0 {
					t.Fatalf("replica logged errors:\n%s", strings.Join(errs, "\n"))
				}
			}
			if _, err := os.Stat(primary.Path(".primary")); !os.IsNotExist(err) {
				t.Fatalf(".primary on the primary: %v", err)
			}
		})
	}
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s still exists on the replica", path)
}

func readLag(t *testing.T, n *Node) int {
	t.Helper()
	b, err := os.ReadFile(n.Path(".lag"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf(".lag %q: %v", b, err)
	}
	return v
}

// assertReadOnly checks that writes on a replica fail cleanly and change
// nothing.
func assertReadOnly(t *testing.T, r *Node, name, mode string) {
	t.Helper()
	before := r.Pos(name)
	db, err := sql.Open("sqlite3", "file:"+r.Path(name)+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Exec(`INSERT INTO t (v) VALUES (x'00')`)
	var serr sqlite3.Error
	if !errors.As(err, &serr) || serr.Code != sqlite3.ErrReadonly {
		t.Fatalf("write on replica (%s): got %v, want SQLITE_READONLY", mode, err)
	}
	if _, err := os.Create(r.Path("new-file")); !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create on replica: %v, want EACCES", err)
	}
	if after := r.Pos(name); after != before {
		t.Fatalf("position moved on a refused write: %s -> %s", before, after)
	}
}

func TestReplicaStartedLateGetsSnapshot(t *testing.T) {
	primary, _ := newCluster(t, 0, "")
	db := openDB(t, primary.Path("app.db"), "wal")
	randomTxs(t, db, rand.New(rand.NewSource(2)), 200)
	r := newNodeWith(t, NodeConfig{Hostname: "late", PrimaryURL: primary.URL()})
	r.Start()
	waitCaughtUp(t, primary, "app.db", r)
	assertIdentical(t, primary, r, "app.db")
	if !strings.Contains(r.Log(), "applied snapshot") {
		t.Fatalf("late replica did not catch up by snapshot:\n%s", r.Log())
	}
}

func TestReplicaKilledResumesWithoutSnapshot(t *testing.T) {
	primary, rs := newCluster(t, 1, "")
	r := rs[0]
	db := openDB(t, primary.Path("app.db"), "delete")
	rng := rand.New(rand.NewSource(3))
	randomTxs(t, db, rng, 50)
	waitCaughtUp(t, primary, "app.db", r)
	for round := 0; round < 3; round++ {
		r.Kill()
		randomTxs(t, db, rng, 40)
		logBefore := len(r.Log())
		r.Start()
		randomTxs(t, db, rng, 10)
		waitCaughtUp(t, primary, "app.db", r)
		assertIdentical(t, primary, r, "app.db")
		if after := r.Log()[logBefore:]; strings.Contains(after, "applied snapshot") {
			t.Fatalf("round %d: restarted replica took a snapshot although the history was retained:\n%s", round, after)
		}
	}
}

func TestReplicaBehindRetentionGetsSnapshot(t *testing.T) {
	data := "  retention: 1s\n  retention-monitor-interval: 100ms"
	primary, rs := newCluster(t, 1, data)
	r := rs[0]
	db := openDB(t, primary.Path("app.db"), "wal")
	rng := rand.New(rand.NewSource(4))
	randomTxs(t, db, rng, 30)
	waitCaughtUp(t, primary, "app.db", r)
	r.Stop()
	randomTxs(t, db, rng, 30)
	time.Sleep(2500 * time.Millisecond) // the partition outlasts the retention
	logBefore := len(r.Log())
	r.Start()
	waitCaughtUp(t, primary, "app.db", r)
	assertIdentical(t, primary, r, "app.db")
	if after := r.Log()[logBefore:]; !strings.Contains(after, "applied snapshot") {
		t.Fatalf("replica behind the retained history did not snapshot:\n%s", after)
	}
	if !strings.Contains(primary.Log(), "behind the retained history") {
		t.Fatalf("primary did not say why it sent a snapshot:\n%s", primary.Log())
	}
}

// TestDivergedPrimaryResnapshots swaps the roles of two nodes after the old
// primary committed a transaction the replica never received: when the old
// primary rejoins as a replica, its position has the new primary's TXID
// with another checksum, and it must be replaced by a snapshot.
func TestDivergedPrimaryResnapshots(t *testing.T) {
	a, rs := newCluster(t, 1, "")
	b := rs[0]
	db := openDB(t, a.Path("app.db"), "delete")
	rng := rand.New(rand.NewSource(5))
	randomTxs(t, db, rng, 20)
	waitCaughtUp(t, a, "app.db", b)

	b.Stop()
	if _, err := db.Exec(`INSERT INTO t (v) VALUES ('only on a')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a.Stop()

	b.Configure(NodeConfig{Hostname: "b", Candidate: true})
	b.Start()
	bdb := openDB(t, b.Path("app.db"), "delete")
	if _, err := bdb.Exec(`INSERT INTO t (v) VALUES ('only on b')`); err != nil {
		t.Fatal(err)
	}
	a.Configure(NodeConfig{Hostname: "a", PrimaryURL: b.URL()})
	logBefore := len(a.Log())
	a.Start()
	waitCaughtUp(t, b, "app.db", a)
	assertIdentical(t, b, a, "app.db")
	if !strings.Contains(b.Log(), "diverges") || !strings.Contains(a.Log()[logBefore:], "applied snapshot") {
		t.Fatalf("diverged node was not resnapshotted\nnew primary:\n%s\nold primary:\n%s", b.Log(), a.Log()[logBefore:])
	}
	adb := openDB(t, a.Path("app.db"), "delete")
	var n int
	if err := adb.QueryRow(`SELECT count(*) FROM t WHERE v = 'only on a'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("diverged row still on the old primary: %d %v", n, err)
	}
}

// TestReplicaReadersNeverSeeAnError runs tight read loops on a replica while
// 10,000 transactions are applied. Every transaction inserts one row into
// each of two tables (on different pages), so a reader that saw half a
// transaction would count different numbers of rows.
func TestReplicaReadersNeverSeeAnError(t *testing.T) {
	const txs = 10000
	for _, mode := range []string{"wal", "delete"} {
		t.Run(mode, func(t *testing.T) {
			primary := newNodeWith(t, NodeConfig{Hostname: "primary", Candidate: true, NoVerify: true})
			primary.Start()
			r := newNodeWith(t, NodeConfig{Hostname: "replica", PrimaryURL: primary.URL()})
			r.Start()
			db := openDB(t, primary.Path("app.db"), mode)
			mustExec(t, db, `PRAGMA synchronous=OFF`)
			mustExec(t, db, `CREATE TABLE a (id INTEGER PRIMARY KEY, v BLOB)`)
			mustExec(t, db, `CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)`)
			waitCaughtUp(t, primary, "app.db", r)

			var stop atomic.Bool
			var reads atomic.Int64
			errs := make(chan error, 16)
			var wg sync.WaitGroup
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rdb, err := sql.Open("sqlite3", "file:"+r.Path("app.db")+"?_busy_timeout=10000")
					if err != nil {
						errs <- err
						return
					}
					defer rdb.Close()
					rdb.SetMaxOpenConns(1)
					for !stop.Load() {
						var na, nb int
						if err := rdb.QueryRow(`SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)`).Scan(&na, &nb); err != nil {
							errs <- fmt.Errorf("read after %d reads: %w", reads.Load(), err)
							return
						}
						if na != nb {
							errs <- fmt.Errorf("saw half a transaction: %d rows in a, %d in b", na, nb)
							return
						}
						reads.Add(1)
					}
				}()
			}
			for i := 0; i < txs; i++ {
				tx, err := db.Begin()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(`INSERT INTO a (v) VALUES (randomblob(300))`); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(`INSERT INTO b (v) VALUES (randomblob(300))`); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			// The readers keep running until the replica has applied every
			// transaction; on two cores they compete with it for the CPU.
			// In rollback mode applies and readers take turns on the
			// database's locks through SQLite's busy handler, whose sleeps
			// are milliseconds long, so catching up takes minutes here.
			waitCaughtUpWithin(t, 12*time.Minute, primary, "app.db", r)
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%s: %d reads on the replica during %d applied transactions", mode, reads.Load(), txs)
			assertIdentical(t, primary, r, "app.db")
		})
	}
}
