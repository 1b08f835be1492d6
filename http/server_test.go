package http

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

// fakeNode is a node whose role the test sets.
type fakeNode struct {
	primary     atomic.Bool
	candidate   bool
	hostname    string
	primaryHost string
	clusterID   string
	nodeID      string
}

func (n *fakeNode) IsPrimary() bool         { return n.primary.Load() }
func (n *fakeNode) Candidate() bool         { return n.candidate }
func (n *fakeNode) Hostname() string        { return n.hostname }
func (n *fakeNode) PrimaryHostname() string { return n.primaryHost }
func (n *fakeNode) ClusterID() string       { return n.clusterID }
func (n *fakeNode) NodeID() string          { return n.nodeID }

// fileSnapshotter snapshots a database by copying its file in the store,
// which the tests write themselves (there is no capture layer).
type fileSnapshotter struct{ st *store.Store }

func (f fileSnapshotter) Snapshot(ctx context.Context, name string, dst *os.File) (capture.SnapshotInfo, error) {
	db := f.st.DB(name)
	if db == nil {
		return capture.SnapshotInfo{}, os.ErrNotExist
	}
	info := capture.SnapshotInfo{Pos: db.Pos(), PageSize: db.PageSize(), Commit: db.Commit()}
	b, err := os.ReadFile(f.st.Path(name))
	if err != nil {
		return info, err
	}
	if _, err := dst.WriteAt(b[:int64(info.PageSize)*int64(info.Commit)], 0); err != nil {
		return info, err
	}
	return info, nil
}

// testPrimary is a server on 127.0.0.1:0 with a real store.
type testPrimary struct {
	node  *fakeNode
	store *store.Store
	srv   *Server
	url   string
}

func newTestPrimary(t *testing.T, isPrimary bool) *testPrimary {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), SkipSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &fakeNode{candidate: true, hostname: "node-a", primaryHost: "node-b", clusterID: "LFSC0123456789ABCDEF", nodeID: "00000000000000aa"}
	n.primary.Store(isPrimary)
	srv := NewServer(ServerConfig{
		Addr: "127.0.0.1:0", MountDir: t.TempDir(), Store: st, Snapshot: fileSnapshotter{st}, Node: n,
		HeartbeatInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testPrimary{node: n, store: st, srv: srv, url: "http://" + srv.Addr().String()}
}

// testImages returns successive images of one SQLite database.
func testImages(t *testing.T, n int) [][]byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	var imgs [][]byte
	for i := 0; i < n; i++ {
		if _, err := db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20) INSERT INTO t (v) SELECT randomblob(400) FROM n`); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, b)
	}
	return imgs
}

// commit records img as the next transaction of name, as the capture layer
// would, and puts it in the store's file.
func commit(t *testing.T, st *store.Store, name string, img []byte) sltx.Pos {
	t.Helper()
	hdr, err := ltx.ParseDBHeader(img, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(img)
	sum, err := ltx.DatabaseChecksum(r, hdr.PageSize, hdr.PageN)
	if err != nil {
		t.Fatal(err)
	}
	db, err := st.CreateDB(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(st.Path(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.Path(name), img, 0o644); err != nil {
		t.Fatal(err)
	}
	pos, err := db.WriteTx(store.Tx{PageSize: hdr.PageSize, Commit: hdr.PageN, Pages: store.AllPages(hdr.PageSize, hdr.PageN),
		Read: store.PageReader(r, hdr.PageSize), Delta: sum, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func do(t *testing.T, method, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func streamBody(t *testing.T, clusterID string, positions map[string]string) string {
	t.Helper()
	b, err := json.Marshal(streamRequest{ClusterID: clusterID, Hostname: "replica-x", Positions: positions})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServerRefusals checks every request the API must refuse: the status,
// a message saying why, and no change to the store.
func TestServerRefusals(t *testing.T) {
	primary := newTestPrimary(t, true)
	replica := newTestPrimary(t, false)
	pos := commit(t, primary.store, "a.db", testImages(t, 1)[0])
	cid := primary.node.clusterID
	for _, tt := range []struct {
		name         string
		srv          *testPrimary
		method, path string
		body         string
		code         int
		want         string
	}{
		// /import validates the upload before anything is written.
		{"ImportNotSQLite", primary, "POST", "/import?name=a.db", "this is not a database, just text\n", 400, "not a SQLite database"},
		{"ImportEmpty", primary, "POST", "/import?name=a.db", "", 400, "not a SQLite database"},
		{"ImportBadName", primary, "POST", "/import?name=../a.db", "x", 400, "invalid database name"},
		{"ImportAsJournal", primary, "POST", "/import?name=a.db-journal", "x", 400, "helper files"},
		{"ImportAsWAL", primary, "POST", "/import?name=sub/a.db-wal", "x", 400, "helper files"},
		{"ImportAsSHM", primary, "POST", "/import?name=a.db-shm", "x", 400, "helper files"},
		{"ImportOnReplica", replica, "POST", "/import?name=a.db", "x", 503, "import on the primary (node-b)"},
		// /export only serves clean names it has.
		{"ExportUnknown", primary, "GET", "/export?name=unknown.db", "", 404, `"unknown.db" not found`},
		{"ExportUnknownReplica", replica, "GET", "/export?name=unknown.db", "", 404, "not found"},
		{"ExportDotDot", primary, "GET", "/export?name=../etc", "", 400, "invalid database name"},
		{"ExportAbsolute", primary, "GET", "/export?name=/etc/passwd", "", 400, "invalid database name"},
		{"ExportInnerDotDot", primary, "GET", "/export?name=sub/../../a.db", "", 400, "invalid database name"},
		{"ExportNoName", primary, "GET", "/export", "", 400, "invalid database name"},
		// /stream only on the primary, only for its cluster, only with
		// well-formed positions.
		{"StreamOtherCluster", primary, "POST", "/stream", streamBody(t, "LFSCDEADBEEF", nil), 409, "cluster id mismatch"},
		{"StreamOnReplica", replica, "POST", "/stream", streamBody(t, cid, nil), 503, "not the primary"},
		{"StreamBadJSON", primary, "POST", "/stream", "{", 400, "decode stream request"},
		{"StreamBadPos", primary, "POST", "/stream", streamBody(t, cid, map[string]string{"a.db": "zz"}), 400, "bad position"},
		{"StreamBadName", primary, "POST", "/stream", streamBody(t, cid, map[string]string{"../a.db": pos.String()}), 400, "bad position"},
		{"StreamGET", primary, "GET", "/stream", "", 405, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, tt.srv.url+tt.path, tt.body)
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("%s %s: %s %q, want %d %q", tt.method, tt.path, resp.Status, body, tt.code, tt.want)
			}
			if tt.code == 503 && resp.Header.Get(headerPrimaryHostname) != "node-b" {
				t.Fatalf("503 without the primary's hostname: %v", resp.Header)
			}
		})
	}
	if dbs := primary.store.DBs(); len(dbs) != 1 || dbs[0].Pos() != pos {
		t.Fatalf("refused requests changed the store: %v", dbs)
	}
	if dbs := replica.store.DBs(); len(dbs) != 0 {
		t.Fatalf("refused requests created databases on the replica: %v", dbs)
	}
}

// TestServerInfo checks GET /info reports the node's fields and every
// database with a position.
func TestServerInfo(t *testing.T) {
	for _, isPrimary := range []bool{true, false} {
		t.Run(fmt.Sprint("primary=", isPrimary), func(t *testing.T) {
			p := newTestPrimary(t, isPrimary)
			imgs := testImages(t, 2)
			commit(t, p.store, "a.db", imgs[0])
			pos := commit(t, p.store, "sub/b.db", imgs[1])
			if _, err := p.store.CreateDB("empty.db"); err != nil { // no position: not listed
				t.Fatal(err)
			}
			resp, body := do(t, "GET", p.url+"/info", "")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("GET /info: %s %s", resp.Status, resp.Header.Get("Content-Type"))
			}
			var info Info
			if err := json.Unmarshal([]byte(body), &info); err != nil {
				t.Fatal(err)
			}
			wantPrimaryHost := "node-b"
			if isPrimary {
				wantPrimaryHost = "node-a" // the primary names itself
			}
			if info.ClusterID != p.node.clusterID || info.NodeID != p.node.nodeID || info.Hostname != "node-a" ||
				info.IsPrimary != isPrimary || !info.Candidate || info.PrimaryHostname != wantPrimaryHost {
				t.Fatalf("info %+v", info)
			}
			b := info.Databases["sub/b.db"]
			if len(info.Databases) != 2 || b.Pos != pos.String() || b.TXID != pos.TXID.String() ||
				b.Checksum != pos.PostApplyChecksum.String() || b.PageSize != 4096 || int(b.Pages)*4096 != len(imgs[1]) {
				t.Fatalf("databases %+v, want sub/b.db at %s", info.Databases, pos)
			}
		})
	}
}

// frame is one frame read from a stream.
type frame struct {
	t    frameType
	name string
	data []byte // LTX file or snapshot image
	snap snapshotHeader
}

func readFrame(t *testing.T, br *bufio.Reader) frame {
	t.Helper()
	ft, err := readType(br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	f := frame{t: ft}
	if ft == frameHeartbeat {
		var ts int64
		if err := binary.Read(br, binary.BigEndian, &ts); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(time.UnixMilli(ts)); d < -time.Minute || d > time.Minute {
			t.Fatalf("heartbeat clock off by %s", d)
		}
		return f
	}
	if f.name, err = readName(br); err != nil {
		t.Fatal(err)
	}
	var size int64
	switch ft {
	case frameLTX:
		var n uint64
		if err := binary.Read(br, binary.BigEndian, &n); err != nil {
			t.Fatal(err)
		}
		size = int64(n)
	case frameSnapshot:
		if err := binary.Read(br, binary.BigEndian, &f.snap); err != nil {
			t.Fatal(err)
		}
		size = f.snap.size()
	}
	f.data = make([]byte, size)
	if _, err := io.ReadFull(br, f.data); err != nil {
		t.Fatalf("read %d bytes of frame: %v", size, err)
	}
	return f
}

// openStream posts to /stream and returns the frame reader.
func openStream(t *testing.T, p *testPrimary, positions map[string]string) *bufio.Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "POST", p.url+"/stream", strings.NewReader(streamBody(t, p.node.clusterID, positions)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get(headerClusterID) != p.node.clusterID || resp.Header.Get(headerPrimaryHostname) != "node-a" {
		t.Fatalf("stream: %s %v", resp.Status, resp.Header)
	}
	return bufio.NewReader(resp.Body)
}

// TestServerStream checks what the primary sends a replica depending on
// the positions it reports: the missing LTX files, byte for byte, or a
// snapshot when it has nothing, diverged, or is ahead; a Drop for a
// database the primary does not have; heartbeats when caught up.
func TestServerStream(t *testing.T) {
	p := newTestPrimary(t, true)
	imgs := testImages(t, 3)
	var poss []sltx.Pos
	for _, img := range imgs {
		poss = append(poss, commit(t, p.store, "a.db", img))
	}
	ltxFile := func(txid sltx.TXID) []byte {
		b, err := os.ReadFile(p.store.DB("a.db").LTXPath(txid))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	diverged := sltx.NewPos(2, poss[0].PostApplyChecksum)
	ahead := sltx.NewPos(9, poss[2].PostApplyChecksum)
	snapshot := []frameType{frameSnapshot, frameHeartbeat}
	for _, tt := range []struct {
		name      string
		positions map[string]string
		want      []frameType
		ltx       []sltx.TXID // the LTX frames' files, in order
	}{
		{"Behind", map[string]string{"a.db": poss[0].String()}, []frameType{frameLTX, frameLTX, frameHeartbeat}, []sltx.TXID{2, 3}},
		{"CaughtUp", map[string]string{"a.db": poss[2].String()}, []frameType{frameHeartbeat}, nil},
		{"New", nil, snapshot, nil},
		{"Diverged", map[string]string{"a.db": diverged.String()}, snapshot, nil},
		{"Ahead", map[string]string{"a.db": ahead.String()}, snapshot, nil},
		{"Deleted", map[string]string{"a.db": poss[2].String(), "gone.db": poss[0].String()}, []frameType{frameDrop, frameHeartbeat}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			br := openStream(t, p, tt.positions)
			var ltxs []sltx.TXID
			for i, want := range tt.want {
				f := readFrame(t, br)
				if f.t != want {
					t.Fatalf("frame %d: type %d, want %d", i, f.t, want)
				}
				switch f.t {
				case frameLTX:
					var hdr sltx.Header
					if err := hdr.UnmarshalBinary(f.data); err != nil {
						t.Fatal(err)
					}
					if f.name != "a.db" || !bytes.Equal(f.data, ltxFile(hdr.MinTXID)) {
						t.Fatalf("LTX frame %s txid %d is not the history's file", f.name, hdr.MinTXID)
					}
					ltxs = append(ltxs, hdr.MinTXID)
				case frameSnapshot:
					if f.name != "a.db" || f.snap.TXID != 3 || f.snap.Checksum != poss[2].PostApplyChecksum || !bytes.Equal(f.data, imgs[2]) {
						t.Fatalf("snapshot frame %s %+v (%d bytes) is not the database at %s", f.name, f.snap, len(f.data), poss[2])
					}
				case frameDrop:
					if f.name != "gone.db" {
						t.Fatalf("drop of %q", f.name)
					}
				}
			}
			if fmt.Sprint(ltxs) != fmt.Sprint(tt.ltx) {
				t.Fatalf("LTX frames for txids %v, want %v", ltxs, tt.ltx)
			}
		})
	}

	// A commit while a replica is connected is sent at once.
	t.Run("Live", func(t *testing.T) {
		br := openStream(t, p, map[string]string{"a.db": p.store.DB("a.db").Pos().String()})
		if f := readFrame(t, br); f.t != frameHeartbeat {
			t.Fatalf("frame type %d, want a heartbeat", f.t)
		}
		more := testImages(t, 1)[0]
		pos := commit(t, p.store, "b.db", more)
		for {
			f := readFrame(t, br)
			if f.t == frameHeartbeat {
				continue
			}
			// A new database is sent as a snapshot.
			if f.t != frameSnapshot || f.name != "b.db" || f.snap.TXID != pos.TXID || !bytes.Equal(f.data, more) {
				t.Fatalf("frame %d %s %+v, want b.db's snapshot at %s", f.t, f.name, f.snap, pos)
			}
			break
		}
	})
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type staticFinder string

func (f staticFinder) PrimaryURL(context.Context) (string, string, bool) {
	return string(f), "node-a", true
}

// fakeCluster adopts the first cluster ID it is given and refuses others.
type fakeCluster struct {
	mu sync.Mutex
	id string
}

func (c *fakeCluster) ClusterID() string { c.mu.Lock(); defer c.mu.Unlock(); return c.id }

func (c *fakeCluster) AdoptClusterID(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.id == "" {
		c.id = id
	}
	if c.id != id {
		return errors.New("cluster mismatch")
	}
	return nil
}

// runReplica follows p with a new store until the test ends.
func runReplica(t *testing.T, p *testPrimary, cluster *fakeCluster) (*store.Store, *syncBuffer) {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), SkipSync: true})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	r := NewReplica(ReplicaConfig{Store: st, Primary: staticFinder(p.url), Cluster: cluster, Hostname: "replica-x",
		ReconnectDelay: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return st, logs
}

// TestReplicaFollowsServer runs the replica client against the server with
// two stores and no FUSE: it joins the cluster, receives a snapshot and then
// transactions, and ends byte-identical; a replica of another cluster
// applies nothing.
func TestReplicaFollowsServer(t *testing.T) {
	p := newTestPrimary(t, true)
	imgs := testImages(t, 4)
	commit(t, p.store, "a.db", imgs[0])
	commit(t, p.store, "a.db", imgs[1])

	wait := func(st *store.Store, logs *syncBuffer, pos sltx.Pos, img []byte) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if db := st.DB("a.db"); db != nil && db.Pos() == pos {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica never reached %s\n%s", pos, logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if b, _ := os.ReadFile(st.Path("a.db")); !bytes.Equal(b, img) {
			t.Fatalf("replica at %s is not the primary's database (%d vs %d bytes)", pos, len(b), len(img))
		}
	}

	cluster := &fakeCluster{}
	st, logs := runReplica(t, p, cluster)
	wait(st, logs, p.store.DB("a.db").Pos(), imgs[1])
	if cluster.ClusterID() != p.node.clusterID {
		t.Fatalf("replica did not join the cluster: %q", cluster.ClusterID())
	}
	for _, img := range imgs[2:] {
		wait(st, logs, commit(t, p.store, "a.db", img), img)
	}
	if !strings.Contains(logs.String(), "applied snapshot") {
		t.Fatalf("replica did not start from a snapshot:\n%s", logs)
	}
	if txids, _ := st.DB("a.db").History(); len(txids) != 2 {
		t.Fatalf("replica history %v, want the two transactions after the snapshot", txids)
	}

	// Another cluster's replica is refused and applies nothing.
	other := &fakeCluster{id: "LFSCDEADBEEF"}
	st2, logs2 := runReplica(t, p, other)
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(logs2.String(), "cluster id mismatch") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no cluster mismatch reported:\n%s", logs2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if dbs := st2.DBs(); len(dbs) != 0 || other.ClusterID() != "LFSCDEADBEEF" {
		t.Fatalf("replica of another cluster has %v, cluster %s", dbs, other.ClusterID())
	}
}

// TestServerExport checks GET /export on a primary (through the
// snapshotter) and on a replica (from the applied file): the image at one
// position, with that position in Litefs-Pos.
func TestServerExport(t *testing.T) {
	for _, isPrimary := range []bool{true, false} {
		t.Run(fmt.Sprint("primary=", isPrimary), func(t *testing.T) {
			p := newTestPrimary(t, isPrimary)
			imgs := testImages(t, 2)
			commit(t, p.store, "sub/a.db", imgs[0])
			pos := commit(t, p.store, "sub/a.db", imgs[1])
			resp, body := do(t, "GET", p.url+"/export?name=sub/a.db", "")
			if resp.StatusCode != 200 || resp.Header.Get(headerPos) != pos.String() || resp.ContentLength != int64(len(imgs[1])) {
				t.Fatalf("export: %s pos %q length %d, want %s %d", resp.Status, resp.Header.Get(headerPos), resp.ContentLength, pos, len(imgs[1]))
			}
			if body != string(imgs[1]) {
				t.Fatalf("export is not the database (%d bytes)", len(body))
			}
		})
	}
}
