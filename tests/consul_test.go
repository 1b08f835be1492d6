package tests

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replfs/litefs/internal/consultest"
)

// consulTTL and consulLockDelay are the harness's Consul lease settings.
const (
	consulTTL       = 10 * time.Second
	consulLockDelay = time.Second
)

// newConsulCluster starts a Consul agent and n candidate nodes, the first of
// which becomes the primary.
func newConsulCluster(t *testing.T, n int) (*consultest.Agent, []*Node) {
	t.Helper()
	requireFUSE(t)
	agent := consultest.Start(t)
	var nodes []*Node
	for i := 0; i < n; i++ {
		node := newNodeWith(t, NodeConfig{Hostname: fmt.Sprintf("node%d", i+1), Candidate: true, ConsulURL: agent.URL()})
		node.Start()
		nodes = append(nodes, node)
		if i == 0 {
			waitPrimary(t, nodes, -1, 15*time.Second)
		}
	}
	return agent, nodes
}

// nodeInfo is the part of GET /info the tests read.
type nodeInfo struct {
	ClusterID       string `json:"clusterID"`
	IsPrimary       bool   `json:"isPrimary"`
	PrimaryHostname string `json:"primaryHostname"`
	Databases       map[string]struct {
		Pos string `json:"pos"`
	} `json:"databases"`
}

func info(n *Node) (nodeInfo, error) {
	var ni nodeInfo
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(n.URL() + "/info")
	if err != nil {
		return ni, err
	}
	defer resp.Body.Close()
	return ni, json.NewDecoder(resp.Body).Decode(&ni)
}

// waitPrimary waits until exactly one running node of nodes (skipping
// nil ones) says it is the primary, and returns its index.
func waitPrimary(t *testing.T, nodes []*Node, exclude int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for i, n := range nodes {
			if n == nil || i == exclude || n.cmd == nil {
				continue
			}
			if ni, err := info(n); err == nil && ni.IsPrimary {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	var logs []string
	for _, n := range nodes {
		if n != nil {
			logs = append(logs, n.Log())
		}
	}
	t.Fatalf("no primary after %s\n%s", timeout, strings.Join(logs, "\n-----\n"))
	return -1
}

func others(nodes []*Node, i int) []*Node {
	var out []*Node
	for j, n := range nodes {
		if j != i {
			out = append(out, n)
		}
	}
	return out
}

func TestConsulCleanShutdownFailover(t *testing.T) {
	_, nodes := newConsulCluster(t, 3)
	p := waitPrimary(t, nodes, -1, 5*time.Second)
	db := openDB(t, nodes[p].Path("app.db"), "wal")
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	mustExec(t, db, `INSERT INTO t (v) VALUES ('before')`)
	waitCaughtUp(t, nodes[p], "app.db", others(nodes, p)...)
	db.Close()

	start := time.Now()
	nodes[p].Stop()
	q := waitPrimary(t, nodes, p, 2*consulTTL)
	t.Logf("clean shutdown: %s is primary after %s", nodes[q].Dir, time.Since(start).Round(time.Millisecond))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("clean failover took %s; the released lease should be taken within about a second", elapsed)
	}
	ndb := openDB(t, nodes[q].Path("app.db"), "wal")
	mustExec(t, ndb, `INSERT INTO t (v) VALUES ('after')`)

	nodes[p].Start() // the old primary rejoins as a replica
	waitCaughtUp(t, nodes[q], "app.db", others(nodes, q)...)
	if ni, err := info(nodes[p]); err != nil || ni.IsPrimary {
		t.Fatalf("old primary after rejoining: %+v %v", ni, err)
	}
	for _, r := range others(nodes, q) {
		assertIdentical(t, nodes[q], r, "app.db")
	}
	var n int
	if err := ndb.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after failover: %d %v", n, err)
	}
}

func TestConsulNonCandidateNeverLeads(t *testing.T) {
	agent, nodes := newConsulCluster(t, 1)
	follower := newNodeWith(t, NodeConfig{Hostname: "follower", Candidate: false, ConsulURL: agent.URL()})
	follower.Start()
	db := openDB(t, nodes[0].Path("app.db"), "delete")
	mustExec(t, db, `CREATE TABLE t (x)`)
	waitCaughtUp(t, nodes[0], "app.db", follower)
	db.Close()
	nodes[0].Stop()
	time.Sleep(3 * time.Second)
	if ni, err := info(follower); err != nil || ni.IsPrimary {
		t.Fatalf("non-candidate took the lease: %+v %v", ni, err)
	}
	// It still serves reads.
	rdb := openDB(t, follower.Path("app.db"), "delete")
	var n int
	if err := rdb.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
}

// writeLoop inserts rows through whichever node is primary until stopped,
// and records the longest time between two successful inserts.
type writeLoop struct {
	nodes    []*Node
	stop     atomic.Bool
	acked    atomic.Int64
	mu       sync.Mutex
	downtime time.Duration
	done     chan struct{}
}

func startWriteLoop(nodes []*Node) *writeLoop {
	w := &writeLoop{nodes: nodes, done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writeLoop) run() {
	defer close(w.done)
	last := time.Now()
	var db *sql.DB
	for !w.stop.Load() {
		if db == nil {
			for _, n := range w.nodes {
				// Only the API is asked: the test goroutine starts and kills
				// nodes meanwhile, and a dead node does not answer.
				if ni, err := info(n); err == nil && ni.IsPrimary {
					db, _ = sql.Open("sqlite3", "file:"+n.Path("app.db")+"?_busy_timeout=2000&_journal_mode=wal")
					break
				}
			}
			if db == nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		if _, err := db.Exec(`INSERT INTO t (v) VALUES ('loop')`); err != nil {
			db.Close()
			db = nil
			continue
		}
		now := time.Now()
		w.mu.Lock()
		w.downtime = max(w.downtime, now.Sub(last))
		w.mu.Unlock()
		last = now
		w.acked.Add(1)
	}
	if db != nil {
		db.Close()
	}
}

func (w *writeLoop) finish() time.Duration {
	w.stop.Store(true)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downtime
}

func TestConsulKillFailover(t *testing.T) {
	_, nodes := newConsulCluster(t, 3)
	p := waitPrimary(t, nodes, -1, 5*time.Second)
	db := openDB(t, nodes[p].Path("app.db"), "wal")
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	db.Close()
	waitCaughtUp(t, nodes[p], "app.db", others(nodes, p)...)

	w := startWriteLoop(nodes)
	time.Sleep(time.Second)
	start := time.Now()
	nodes[p].Kill()
	q := waitPrimary(t, nodes, p, 2*consulTTL+consulLockDelay+10*time.Second)
	elapsed := time.Since(start)
	for w.acked.Load() < 50 || time.Since(start) < elapsed+time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	downtime := w.finish()
	t.Logf("SIGKILL: new primary after %s; longest gap between acknowledged writes %s", elapsed.Round(time.Millisecond), downtime.Round(time.Millisecond))
	if limit := 2*consulTTL + consulLockDelay + 2*time.Second; elapsed > limit {
		t.Errorf("failover after SIGKILL took %s, more than 2 x TTL + lock-delay + 2s = %s", elapsed, limit)
	}
	survivors := []*Node{}
	for i, n := range nodes {
		if i != p && i != q {
			survivors = append(survivors, n)
		}
	}
	waitCaughtUp(t, nodes[q], "app.db", survivors...)
	for _, r := range survivors {
		assertIdentical(t, nodes[q], r, "app.db")
	}
	// The killed node comes back as a replica and converges too.
	nodes[p].Start()
	waitCaughtUp(t, nodes[q], "app.db", nodes[p])
	assertIdentical(t, nodes[q], nodes[p], "app.db")
}

func TestConsulPromoteHandoff(t *testing.T) {
	_, nodes := newConsulCluster(t, 3)
	p := waitPrimary(t, nodes, -1, 5*time.Second)
	r := (p + 1) % len(nodes)
	db := openDB(t, nodes[p].Path("app.db"), "wal")
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	db.Close()
	w := startWriteLoop(nodes)
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	out, err := exec.Command(litefsBin, "run", "-promote", "-url", nodes[r].URL(), "--", "true").CombinedOutput()
	if err != nil {
		t.Fatalf("litefs run -promote: %v\n%s\n%s", err, out, nodes[p].Log())
	}
	t.Logf("promote took %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	if q := waitPrimary(t, nodes, p, 5*time.Second); q != r {
		t.Fatalf("node %d is primary, want %d", q, r)
	}
	before := w.acked.Load()
	for w.acked.Load() < before+20 {
		time.Sleep(20 * time.Millisecond)
	}
	downtime := w.finish()
	t.Logf("handoff: longest gap between acknowledged writes %s", downtime.Round(time.Millisecond))
	waitCaughtUp(t, nodes[r], "app.db", others(nodes, r)...)
	for _, n := range others(nodes, r) {
		assertIdentical(t, nodes[r], n, "app.db")
	}
	// Nothing acknowledged was lost: every insert is on the new primary.
	ndb := openDB(t, nodes[r].Path("app.db"), "wal")
	var n int64
	if err := ndb.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != w.acked.Load() {
		t.Fatalf("rows on the new primary %d (%v), acknowledged %d", n, err, w.acked.Load())
	}
}

func TestConsulAgentStopAndRestart(t *testing.T) {
	agent, nodes := newConsulCluster(t, 3)
	p := waitPrimary(t, nodes, -1, 5*time.Second)
	db := openDB(t, nodes[p].Path("app.db"), "delete")
	mustExec(t, db, `CREATE TABLE t (x)`)
	mustExec(t, db, `INSERT INTO t VALUES (1)`)
	db.Close()
	waitCaughtUp(t, nodes[p], "app.db", others(nodes, p)...)

	agent.Stop()
	stopped := time.Now()
	// The primary keeps its role while its lease could still be valid, then
	// steps down; the replicas keep serving reads throughout.
	rdb := openDB(t, others(nodes, p)[0].Path("app.db"), "delete")
	for {
		var n int
		if err := rdb.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("read on replica while Consul is down: %d %v", n, err)
		}
		ni, err := info(nodes[p])
		if err == nil && !ni.IsPrimary {
			break
		}
		if time.Since(stopped) > consulTTL+5*time.Second {
			t.Fatalf("primary still primary %s after Consul stopped\n%s", time.Since(stopped), nodes[p].Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("primary stepped down %s after Consul stopped", time.Since(stopped).Round(time.Millisecond))
	if time.Since(stopped) < consulTTL/2 {
		t.Errorf("primary stepped down after %s, before its lease could have expired", time.Since(stopped))
	}
	if !strings.Contains(nodes[p].Log(), "lease renewal failed") {
		t.Errorf("primary did not log the renewal failures")
	}

	agent.Restart(t)
	q := waitPrimary(t, nodes, -1, 30*time.Second)
	wdb := openDB(t, nodes[q].Path("app.db"), "delete")
	mustExec(t, wdb, `INSERT INTO t VALUES (2)`)
	waitCaughtUp(t, nodes[q], "app.db", others(nodes, q)...)
	for _, n := range others(nodes, q) {
		assertIdentical(t, nodes[q], n, "app.db")
	}
}

// TestConsulDivergedFormerPrimaryResnapshots: the primary commits while both
// replicas are down, then dies; a replica takes over and commits its own
// transaction at the same TXID. The old primary rejoins, is found to have
// diverged, and is replaced by a snapshot.
func TestConsulDivergedFormerPrimaryResnapshots(t *testing.T) {
	_, nodes := newConsulCluster(t, 3)
	p := waitPrimary(t, nodes, -1, 5*time.Second)
	db := openDB(t, nodes[p].Path("app.db"), "delete")
	mustExec(t, db, `CREATE TABLE t (v TEXT)`)
	waitCaughtUp(t, nodes[p], "app.db", others(nodes, p)...)
	for _, r := range others(nodes, p) {
		r.Stop()
	}
	mustExec(t, db, `INSERT INTO t VALUES ('lost on failover')`)
	db.Close()
	nodes[p].Kill()
	for _, r := range others(nodes, p) {
		r.Start()
	}
	q := waitPrimary(t, nodes, p, 2*consulTTL+consulLockDelay+10*time.Second)
	ndb := openDB(t, nodes[q].Path("app.db"), "delete")
	mustExec(t, ndb, `INSERT INTO t VALUES ('new primary')`)

	logBefore := len(nodes[p].Log())
	nodes[p].Start()
	waitCaughtUp(t, nodes[q], "app.db", others(nodes, q)...)
	assertIdentical(t, nodes[q], nodes[p], "app.db")
	if after := nodes[p].Log()[logBefore:]; !strings.Contains(after, "applied snapshot") {
		t.Fatalf("diverged former primary did not resnapshot:\n%s", after)
	}
	odb := openDB(t, nodes[p].Path("app.db"), "delete")
	var n int
	if err := odb.QueryRow(`SELECT count(*) FROM t WHERE v = 'lost on failover'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("diverged row survived: %d %v", n, err)
	}
}

func TestConsulStartupErrors(t *testing.T) {
	requireFUSE(t)
	agent := consultest.Start(t)
	// A wrong URL is a startup error naming it.
	bad := newNodeWith(t, NodeConfig{Hostname: "bad", Candidate: true, ConsulURL: "http://127.0.0.1:1"})
	out, err := exec.Command(litefsBin, "mount", "-config", filepath.Join(bad.Dir, "litefs.yml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "127.0.0.1:1") {
		t.Fatalf("mount with a wrong Consul URL: %v\n%s", err, out)
	}
	// A node whose data belongs to another cluster refuses to join.
	good := newNodeWith(t, NodeConfig{Hostname: "good", Candidate: true, ConsulURL: agent.URL()})
	good.Start()
	other := newNodeWith(t, NodeConfig{Hostname: "other", Candidate: true, ConsulURL: agent.URL()})
	if err := os.MkdirAll(other.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other.DataDir, "clusterid"), []byte("LFSCDEADBEEF\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(litefsBin, "mount", "-config", filepath.Join(other.Dir, "litefs.yml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cluster id mismatch") {
		t.Fatalf("mount with another cluster's data: %v\n%s", err, out)
	}
}

// median returns the middle value.
func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestConsulFailoverTimes measures failover for the report: with
// LITEFS_FAILOVER_ROUNDS=N it runs N clean shutdowns and N SIGKILLs of the
// primary of a fresh three-node cluster under a write loop, and logs the
// median time until a new primary and the median longest gap between two
// acknowledged writes. It asserts nothing about speed.
func TestConsulFailoverTimes(t *testing.T) {
	rounds := 0
	fmt.Sscan(os.Getenv("LITEFS_FAILOVER_ROUNDS"), &rounds)
	if rounds == 0 {
		t.Skip("set LITEFS_FAILOVER_ROUNDS to measure")
	}
	for _, kill := range []bool{false, true} {
		var elect, gaps []time.Duration
		for i := 0; i < rounds; i++ {
			_, nodes := newConsulCluster(t, 3)
			p := waitPrimary(t, nodes, -1, 5*time.Second)
			db := openDB(t, nodes[p].Path("app.db"), "wal")
			mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
			db.Close()
			waitCaughtUp(t, nodes[p], "app.db", others(nodes, p)...)
			w := startWriteLoop(nodes)
			time.Sleep(500 * time.Millisecond)
			start := time.Now()
			if kill {
				nodes[p].Kill()
			} else {
				nodes[p].Stop()
			}
			waitPrimary(t, nodes, p, 2*consulTTL+consulLockDelay+10*time.Second)
			elect = append(elect, time.Since(start))
			before := w.acked.Load()
			for w.acked.Load() < before+20 {
				time.Sleep(10 * time.Millisecond)
			}
			gaps = append(gaps, w.finish())
			for _, n := range nodes {
				n.Kill()
				n.detach()
			}
		}
		name := "clean shutdown"
		if kill {
			name = "SIGKILL"
		}
		t.Logf("%s, %d rounds: new primary after median %s (all %v); write downtime median %s (all %v)",
			name, rounds, median(elect).Round(time.Millisecond), roundAll(elect), median(gaps).Round(time.Millisecond), roundAll(gaps))
	}
}

func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, v := range d {
		out[i] = v.Round(10 * time.Millisecond)
	}
	return out
}
