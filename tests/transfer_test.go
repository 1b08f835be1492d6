package tests

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// litefsCLI runs the litefs binary and returns its combined output and
// whether it exited with status 0.
func litefsCLI(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(litefsBin, args...).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run litefs %s: %v", strings.Join(args, " "), err)
	}
	return string(out), err == nil
}

// makeSourceDB creates a SQLite database outside any mount with rows rows
// and returns its path. pageSize 0 keeps SQLite's default.
func makeSourceDB(t *testing.T, name, mode string, pageSize, rows int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode="+mode)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if pageSize != 0 {
		mustExec(t, db, fmt.Sprintf(`PRAGMA page_size = %d`, pageSize))
	}
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, s TEXT)`)
	mustExec(t, db, `CREATE INDEX t_s ON t (s)`)
	mustExec(t, db, fmt.Sprintf(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %d)
		INSERT INTO t (v, s) SELECT randomblob(abs(random()) %% 2000), hex(randomblob(16)) FROM n`, rows))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// mangle rewrites a file with f.
func mangle(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tableDigest summarises every row of table t, to compare two copies.
func tableDigest(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var digest string
	if err := db.QueryRow(`SELECT count(*), coalesce(group_concat(id || ':' || quote(v) || ':' || quote(s), ','), '') FROM (SELECT * FROM t ORDER BY id)`).Scan(&n, &digest); err != nil {
		t.Fatalf("read rows of %s: %v", path, err)
	}
	return fmt.Sprintf("%d rows, %x", n, sha(digest))
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestExportImportCLI drives `litefs import` and `litefs export` against a
// primary and a replica: an imported file becomes an ordinary replicated
// database, exports from both nodes are the same bytes, and every refusal
// (not a database, unknown name, import on a replica) fails with a clear
// message and changes nothing.
func TestExportImportCLI(t *testing.T) {
	primary, rs := newCluster(t, 1, "")
	r := rs[0]
	app := openDB(t, primary.Path("app.db"), "wal")
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, s TEXT)`)
	mustExec(t, app, `INSERT INTO t (v, s) VALUES (randomblob(100), 'app')`)
	appDigest := tableDigest(t, primary.Path("app.db"))
	waitCaughtUp(t, primary, "app.db", r)

	// A file imported into a new name, then different ones over it (another
	// page size, fewer pages, WAL format): each replaces the database as one
	// transaction.
	for i, src := range []string{
		makeSourceDB(t, "src.db", "delete", 0, 3000),
		makeSourceDB(t, "src-1k.db", "delete", 1024, 500),
		makeSourceDB(t, "src-wal.db", "wal", 0, 200),
	} {
		out, ok := litefsCLI(t, "import", "-name", "imported.db", "-url", primary.URL(), src)
		if !ok {
			t.Fatalf("import %d: %s\nprimary log:\n%s", i, out, primary.Log())
		}
		want := tableDigest(t, src)
		waitCaughtUp(t, primary, "imported.db", r)
		assertIdentical(t, primary, r, "imported.db")
		if got := tableDigest(t, r.Path("imported.db")); got != want {
			t.Fatalf("import %d: replica has %s, source %s", i, got, want)
		}

		// Exports from the replica and the primary: the same bytes, the
		// same rows as the source.
		dir := t.TempDir()
		var files [][]byte
		for _, n := range []*Node{r, primary} {
			path := filepath.Join(dir, fmt.Sprintf("export-%d.db", len(files)))
			if out, ok := litefsCLI(t, "export", "-name", "imported.db", "-url", n.URL(), path); !ok || !strings.Contains(out, "exported imported.db at "+primary.Pos("imported.db")) {
				t.Fatalf("export from %s: ok=%v %s", n.URL(), ok, out)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, b)
			if got := tableDigest(t, path); got != want {
				t.Fatalf("export from %s has %s, source %s", n.URL(), got, want)
			}
		}
		if !bytes.Equal(files[0], files[1]) {
			t.Fatalf("exports differ: replica %d bytes, primary %d bytes", len(files[0]), len(files[1]))
		}
	}

	posBefore := map[string]string{}
	for _, name := range []string{"app.db", "imported.db"} {
		posBefore[name] = primary.Pos(name)
	}
	notDB := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notDB, bytes.Repeat([]byte("this is not a database\n"), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	exportTo := filepath.Join(t.TempDir(), "x.db")
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A database with a damaged page, and one cut in the middle of its
	// last page: SQLite headers, but not databases anyone should import.
	damaged := makeSourceDB(t, "damaged.db", "delete", 0, 300)
	mangle(t, damaged, func(b []byte) []byte {
		copy(b[4096*3+100:4096*4-100], bytes.Repeat([]byte{0xa5}, 4096))
		return b
	})
	cut := makeSourceDB(t, "cut.db", "delete", 0, 300)
	mangle(t, cut, func(b []byte) []byte { return b[:len(b)-2048] })
	for _, tt := range []struct {
		what string
		args []string
		want []string // every one must be in the output
	}{
		// A text file is refused before anything is written, over an
		// existing database or under a new name.
		{"import text over a db", []string{"import", "-name", "imported.db", "-url", primary.URL(), notDB}, []string{"400", "not a SQLite database"}},
		{"import text as a new db", []string{"import", "-name", "new.db", "-url", primary.URL(), notDB}, []string{"400", "not a SQLite database"}},
		{"import damaged db", []string{"import", "-name", "imported.db", "-url", primary.URL(), damaged}, []string{"400"}},
		{"import cut db", []string{"import", "-name", "imported.db", "-url", primary.URL(), cut}, []string{"400"}},
		{"import empty file", []string{"import", "-name", "new.db", "-url", primary.URL(), empty}, []string{"400", "not a SQLite database"}},
		// SQLite's helper files are not import targets: a database named
		// app.db-journal would be taken for a hot journal of app.db.
		{"import as a journal", []string{"import", "-name", "app.db-journal", "-url", primary.URL(), makeSourceDB(t, "j.db", "delete", 0, 10)}, []string{"400", "helper files"}},
		{"import as a WAL", []string{"import", "-name", "app.db-wal", "-url", primary.URL(), makeSourceDB(t, "w.db", "delete", 0, 10)}, []string{"400", "helper files"}},
		{"import as a shm", []string{"import", "-name", "imported.db-shm", "-url", primary.URL(), makeSourceDB(t, "s.db", "delete", 0, 10)}, []string{"400", "helper files"}},
		// An unknown database is a 404 with its name.
		{"export unknown", []string{"export", "-name", "nope.db", "-url", primary.URL(), exportTo}, []string{"404", `"nope.db" not found`}},
		{"export unknown on replica", []string{"export", "-name", "nope.db", "-url", r.URL(), exportTo}, []string{"404", `"nope.db" not found`}},
		// A replica refuses imports and says where to go.
		{"import on replica", []string{"import", "-name", "imported.db", "-url", r.URL(), makeSourceDB(t, "other.db", "delete", 0, 10)}, []string{"503", "replica", "import on the primary", "primary"}},
		{"missing path", []string{"import", "-name", "x.db", "-url", primary.URL(), filepath.Join(t.TempDir(), "missing.db")}, []string{"no such file"}},
	} {
		out, ok := litefsCLI(t, tt.args...)
		t.Logf("%s: %s", tt.what, strings.TrimSpace(out))
		if ok {
			t.Errorf("%s: exited 0: %s", tt.what, out)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output %q does not mention %q", tt.what, out, w)
			}
		}
	}
	for name, pos := range posBefore {
		if got := primary.Pos(name); got != pos {
			t.Errorf("%s moved from %s to %s after refused commands", name, pos, got)
		}
	}
	for _, n := range []*Node{primary, r} {
		// (app.db is in WAL mode: it never has a journal of its own.)
		for _, name := range []string{"new.db", "app.db-journal"} {
			if _, err := os.Stat(n.BackingPath(name)); !os.IsNotExist(err) {
				t.Errorf("refused import left %s on %s: %v", name, n.Dir, err)
			}
		}
	}
	// app.db is still readable, by read-only connections too, and intact.
	if got := tableDigest(t, primary.Path("app.db")); got != appDigest {
		t.Errorf("app.db has %s after refused imports, had %s", got, appDigest)
	}
	// A failed export creates no file, not even a temporary one.
	if ents, _ := os.ReadDir(filepath.Dir(exportTo)); len(ents) != 0 {
		t.Errorf("failed exports left %v", ents)
	}
	waitCaughtUp(t, primary, "imported.db", r)
	assertIdentical(t, primary, r, "imported.db")
	// (The refused import is logged at ERROR level because it is a 503;
	// anything else would be a real error.)
	for _, e := range r.Errors() {
		if !strings.Contains(e, "path=/import status=503") {
			t.Errorf("replica logged an error: %s", e)
		}
	}
}

// infoBody is GET /info's body, all of it the tests check.
type infoBody struct {
	ClusterID       string `json:"clusterID"`
	Hostname        string `json:"hostname"`
	IsPrimary       bool   `json:"isPrimary"`
	Candidate       bool   `json:"candidate"`
	PrimaryHostname string `json:"primaryHostname"`
	Databases       map[string]struct {
		TXID     string `json:"txid"`
		Checksum string `json:"checksum"`
		Pos      string `json:"pos"`
	} `json:"databases"`
}

// fetchInfo fetches /info and checks every documented key is present.
func fetchInfo(t *testing.T, n *Node) infoBody {
	t.Helper()
	resp, err := http.Get(n.URL() + "/info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /info: %s %v %s", resp.Status, err, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET /info Content-Type %q", ct)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatalf("GET /info: %v: %s", err, b)
	}
	for _, k := range []string{"clusterID", "hostname", "isPrimary", "candidate", "primaryHostname", "databases"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("GET /info has no %q: %s", k, b)
		}
	}
	var info infoBody
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("GET /info: %v: %s", err, b)
	}
	return info
}

// TestClusterIDMismatch starts a replica whose data directory belongs to
// another cluster: it must refuse the primary's stream (saying why), apply
// nothing, keep its own cluster ID, and leave the primary untouched.
func TestClusterIDMismatch(t *testing.T) {
	primary, _ := newCluster(t, 0, "")
	db := openDB(t, primary.Path("app.db"), "wal")
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	bigTx(t, db, 10)
	before, pos := export(t, primary, "app.db")
	primaryCID := fetchInfo(t, primary).ClusterID

	const foreign = "LFSCDEADBEEF"
	r := newNodeWith(t, NodeConfig{Hostname: "stranger", PrimaryURL: primary.URL()})
	if err := os.MkdirAll(r.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.DataDir, "clusterid"), []byte(foreign+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Start()
	// Several refused attempts (the reconnect delay is 100ms), each saying
	// which clusters do not match.
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(r.Log(), "cluster id mismatch") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("replica never reported the cluster mismatch three times:\n%s", r.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(r.Log(), foreign) || !strings.Contains(r.Log(), primaryCID) {
		t.Errorf("mismatch message does not name both clusters:\n%s", r.Log())
	}
	if strings.Contains(r.Log(), "applied") || strings.Contains(r.Log(), "joining cluster") {
		t.Fatalf("replica of another cluster applied or joined:\n%s", r.Log())
	}

	info := fetchInfo(t, r)
	if len(info.Databases) != 0 || info.ClusterID != foreign || info.IsPrimary {
		t.Fatalf("replica /info: %+v", info)
	}
	if ents, err := os.ReadDir(filepath.Join(r.DataDir, "files")); err != nil || len(ents) != 0 {
		t.Fatalf("replica data dir has files %v (%v)", ents, err)
	}
	if _, err := os.Stat(r.Path("app.db")); !os.IsNotExist(err) {
		t.Fatalf("app.db on the replica: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.DataDir, "clusterid")); strings.TrimSpace(string(b)) != foreign {
		t.Fatalf("replica cluster id rewritten to %q", b)
	}

	// The primary: same cluster, same database, same position.
	if got := fetchInfo(t, primary).ClusterID; got != primaryCID {
		t.Fatalf("primary cluster id changed from %s to %s", primaryCID, got)
	}
	after, pos2 := export(t, primary, "app.db")
	if pos2 != pos || !bytes.Equal(after, before) {
		t.Fatalf("primary database changed: %s -> %s", pos, pos2)
	}
	if !strings.Contains(primary.Log(), "cluster id mismatch") {
		t.Errorf("primary did not log the refused replica:\n%s", primary.Log())
	}
	if errs := append(primary.Errors(), r.Errors()...); len(errs) > 0 {
		t.Errorf("errors logged:\n%s", strings.Join(errs, "\n"))
	}
}

// TestInfoEndpoint checks GET /info on a primary and a replica: the same
// cluster ID, each node's role, and every database at the position its
// <db>-pos file shows.
func TestInfoEndpoint(t *testing.T) {
	primary, rs := newCluster(t, 1, "")
	r := rs[0]
	for _, name := range []string{"app.db", "sub-wal.db"} {
		mode := "delete"
		if strings.Contains(name, "wal") {
			mode = "wal"
		}
		db := openDB(t, primary.Path(name), mode)
		mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
		bigTx(t, db, 4)
		waitCaughtUp(t, primary, name, r)
	}
	cid, err := os.ReadFile(filepath.Join(primary.DataDir, "clusterid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		n                   *Node
		host                string
		isPrimary, candidte bool
	}{
		{primary, "primary", true, true},
		{r, "replica1", false, false},
	} {
		info := fetchInfo(t, tt.n)
		if info.ClusterID != strings.TrimSpace(string(cid)) || !strings.HasPrefix(info.ClusterID, "LFSC") {
			t.Errorf("%s: clusterID %q, primary's data dir has %q", tt.host, info.ClusterID, cid)
		}
		if info.Hostname != tt.host || info.IsPrimary != tt.isPrimary || info.Candidate != tt.candidte || info.PrimaryHostname != "primary" {
			t.Errorf("%s: /info %+v", tt.host, info)
		}
		if len(info.Databases) != 2 {
			t.Errorf("%s: databases %+v", tt.host, info.Databases)
		}
		for _, name := range []string{"app.db", "sub-wal.db"} {
			d, ok := info.Databases[name]
			want := tt.n.Pos(name)
			if !ok || d.Pos != want || d.TXID+"/"+d.Checksum != want {
				t.Errorf("%s: %s in /info %+v, %s-pos %s", tt.host, name, d, name, want)
			}
		}
	}
}
