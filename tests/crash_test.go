package tests

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replfs/litefs/ltx"
)

// runWriter is the body of the writer child process: it commits rows as fast
// as it can and prints each id after its commit returned, which is what
// "acknowledged" means for the crash tests.
func runWriter() int {
	path, mode := os.Getenv("LITEFS_DB"), os.Getenv("LITEFS_MODE")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_journal_mode="+mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	db.SetMaxOpenConns(1)
	defer db.Close()
	for _, q := range []string{`PRAGMA wal_autocheckpoint = 20`, `CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)`} {
		if _, err := db.Exec(q); err != nil {
			fmt.Fprintln(os.Stderr, q, err)
			return 1
		}
	}
	var next int64
	if err := db.QueryRow(`SELECT coalesce(max(id), 0) + 1 FROM t`).Scan(&next); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for ; ; next++ {
		tx, err := db.Begin()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		rows := 1
		if next%25 == 0 {
			rows = 200 // a larger transaction now and then, to crash mid-way through one
		}
		for i := 0; i < rows; i++ {
			id := next
			if i > 0 {
				id = -next*1000 - int64(i) // filler rows that do not collide with acknowledged ids
			}
			b := make([]byte, 100+rng.Intn(1500))
			rng.Read(b)
			if _, err := tx.Exec(`INSERT INTO t(id, v) VALUES(?, ?)`, id, b); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := tx.Commit(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(out, next)
		out.Flush()
	}
}

// writer is a running writer child process and the ids it acknowledged.
type writer struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	acks []int64
	done chan struct{}
}

func startWriter(t *testing.T, dbPath, mode string) *writer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LITEFS_TEST_WRITER=1", "LITEFS_DB="+dbPath, "LITEFS_MODE="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &writer{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if id, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
				w.mu.Lock()
				w.acks = append(w.acks, id)
				w.mu.Unlock()
			}
		}
		_ = cmd.Wait()
	}()
	return w
}

func (w *writer) kill() []int64 {
	_ = w.cmd.Process.Kill()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acks
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// TestCrashRecovery kills the node (SIGKILL) in the middle of a write load,
// and sometimes the application instead, then restarts and checks that the
// database is intact, every acknowledged row is there, and the position was
// recomputed to match the replayed LTX history exactly.
func TestCrashRecovery(t *testing.T) {
	for _, mode := range []string{"delete", "wal"} {
		t.Run(mode, func(t *testing.T) {
			n := newNode(t)
			name := "crash.db"
			rng := rand.New(rand.NewSource(42))
			var acked []int64
			for round := 0; round < 6; round++ {
				n.Start()
				w := startWriter(t, n.Path(name), mode)
				deadline := time.Now().Add(10 * time.Second)
				for w.count() < 20 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(time.Duration(rng.Intn(300)) * time.Millisecond)
				appCrash := round%3 == 2
				if appCrash {
					acked = append(acked, w.kill()...)
					n.Stop()
				} else {
					n.Kill()
					acked = append(acked, w.kill()...)
				}
				if len(acked) == 0 {
					t.Fatalf("round %d: writer acknowledged nothing\n%s", round, n.Log())
				}
				n.Start()
				verifyAfterCrash(t, n, name, mode, acked)
				n.Stop()
				t.Logf("round %d (app crash=%v): %d rows acknowledged so far, position %s", round, appCrash, len(acked), lastPos(n, name))
			}
			if errs := n.Errors(); len(errs) > 0 {
				t.Fatalf("node logged errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}

func verifyAfterCrash(t *testing.T, n *Node, name, mode string, acked []int64) {
	t.Helper()
	db := openDB(t, n.Path(name), mode)
	var ok string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		if dir := os.Getenv("LITEFS_TEST_PRESERVE"); dir != "" {
			_ = exec.Command("cp", "-a", n.DataDir, dir).Run()
		}
		t.Fatalf("integrity_check: %.300q %v\n%s", ok, err, n.Log())
	}
	have := map[int64]bool{}
	rows, err := db.Query(`SELECT id FROM t WHERE id > 0`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	rows.Close()
	for _, id := range acked {
		if !have[id] {
			t.Fatalf("acknowledged row %d is missing after restart\n%s", id, n.Log())
		}
	}
	if mode == "wal" {
		var busy, a, b int
		if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &a, &b); err != nil || busy != 0 {
			t.Fatalf("checkpoint: %d %v", busy, err)
		}
	}
	pos := n.Pos(name)
	db.Close()

	replayed := filepath.Join(t.TempDir(), "replay.db")
	rpos, err := ltx.Replay(n.LTXDir(name), replayed)
	if err != nil {
		t.Fatalf("replay history: %v", err)
	}
	if pos != posString(rpos) {
		t.Fatalf("position %s but history replays to %s", pos, posString(rpos))
	}
	got, _ := os.ReadFile(replayed)
	want, _ := os.ReadFile(n.BackingPath(name))
	if !bytes.Equal(got, want) {
		t.Fatalf("replayed history differs from the database after recovery")
	}
}

func lastPos(n *Node, name string) string {
	b, _ := os.ReadFile(filepath.Join(n.DataDir, "files", name))
	return fmt.Sprintf("%d bytes", len(b))
}
