// Package tests runs litefs nodes as real child processes on real FUSE
// mounts and drives them with real SQLite (mattn/go-sqlite3).
package tests

import (
	"bufio"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

var litefsBin string

func TestMain(m *testing.M) {
	if os.Getenv("LITEFS_TEST_WRITER") != "" {
		os.Exit(runWriter())
	}
	dir, err := os.MkdirTemp("", "litefs-bin-")
	if err != nil {
		panic(err)
	}
	litefsBin = filepath.Join(dir, "litefs")
	out, err := exec.Command("go", "build", "-o", litefsBin, "github.com/replfs/litefs/cmd/litefs").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build litefs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// requireFUSE skips when FUSE is unavailable, unless CI demands it.
func requireFUSE(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("fusermount3")
	if _, serr := os.Stat("/dev/fuse"); err == nil && serr == nil && os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LITEFS_REQUIRE_FUSE") != "" {
		t.Fatalf("FUSE not available (need root, /dev/fuse and fusermount3)")
	}
	t.Skip("FUSE not available (need root, /dev/fuse and fusermount3)")
}

// Node is one litefs process with its own mount and data directory.
type Node struct {
	t       *testing.T
	Dir     string
	MntDir  string
	DataDir string
	cmd     *exec.Cmd
	exited  chan error
	logPath string
	Port    int
	verify  bool
}

func newNode(t *testing.T) *Node {
	return newNodeWith(t, NodeConfig{Hostname: "node1", Candidate: true})
}

// NodeConfig describes one node of a test cluster.
type NodeConfig struct {
	Hostname  string
	Candidate bool
	// PrimaryURL is the static primary's API URL (replicas only).
	PrimaryURL string
	// Data is appended under data: (indented two spaces), Extra at the end.
	Data  string
	Extra string
	// ConsulURL makes the lease a Consul lease on that agent.
	ConsulURL string
	// NoVerify runs the node without -verify-checksums, whose full checksum
	// after every commit makes long write loads slow.
	NoVerify bool
}

// newNodeWith creates a node on its own loopback port.
func newNodeWith(t *testing.T, nc NodeConfig) *Node {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	n := &Node{t: t, Dir: dir, MntDir: filepath.Join(dir, "mnt"), DataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "litefs.log"), Port: freePort(t)}
	n.Configure(nc)
	t.Cleanup(func() { n.Kill(); n.detach() })
	return n
}

// Configure (re)writes the node's config file; it takes effect at Start.
func (n *Node) Configure(nc NodeConfig) {
	n.t.Helper()
	n.verify = !nc.NoVerify
	adv := nc.PrimaryURL
	if nc.Candidate {
		adv = n.URL()
	}
	leaseCfg := fmt.Sprintf(`lease:
  type: "static"
  candidate: %v
  hostname: %q
  advertise-url: %q
  reconnect-delay: 100ms`, nc.Candidate, nc.Hostname, adv)
	if nc.ConsulURL != "" {
		leaseCfg = fmt.Sprintf(`lease:
  type: "consul"
  candidate: %v
  hostname: %q
  advertise-url: %q
  reconnect-delay: 100ms
  demote-delay: 3s
  consul:
    url: %q
    ttl: 10s
    lock-delay: 1s`, nc.Candidate, nc.Hostname, n.URL(), nc.ConsulURL)
	}
	cfg := fmt.Sprintf(`fuse:
  dir: %q
data:
  dir: %q
%s
%s
http:
  addr: "127.0.0.1:%d"
%s`, n.MntDir, n.DataDir, nc.Data, leaseCfg, n.Port, nc.Extra)
	if err := os.WriteFile(filepath.Join(n.Dir, "litefs.yml"), []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// URL is the node's API address.
func (n *Node) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.Port) }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs the node and waits for its mount to be ready.
func (n *Node) Start() {
	n.t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	args := []string{"mount", "-config", filepath.Join(n.Dir, "litefs.yml")}
	if n.verify {
		args = append(args, "-verify-checksums")
	}
	n.cmd = exec.Command(litefsBin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait(); logf.Close() }(n.cmd, n.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.ReadFile(filepath.Join(n.MntDir, ".lag")); err == nil {
			return
		}
		select {
		case err := <-n.exited:
			n.cmd = nil
			n.t.Fatalf("litefs exited before mounting: %v\n%s", err, n.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("mount not ready after 30s\n%s", n.Log())
		}
	}
}

// Stop sends SIGTERM and waits for a clean exit and unmount.
func (n *Node) Stop() {
	n.t.Helper()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.exited:
		if err != nil {
			n.t.Errorf("litefs exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		n.t.Fatalf("litefs did not exit after SIGTERM\n%s", n.Log())
	}
	n.cmd = nil
	if mounted(n.MntDir) {
		n.t.Fatalf("mount still present after clean stop\n%s", n.Log())
	}
}

// Kill sends SIGKILL, as a crash would, and leaves the dead mount behind
// for the next Start to clear, as after a real crash.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		n.t.Errorf("litefs did not exit after SIGKILL")
	}
	n.cmd = nil
}

func (n *Node) detach() {
	for i := 0; i < 10 && mounted(n.MntDir); i++ {
		_ = syscall.Unmount(n.MntDir, syscall.MNT_DETACH)
	}
}

// Log returns the node's log output.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// Path returns the path of a file in the mount.
func (n *Node) Path(name string) string { return filepath.Join(n.MntDir, name) }

// BackingPath returns the data directory's copy of a file in the mount.
func (n *Node) BackingPath(name string) string { return filepath.Join(n.DataDir, "files", name) }

// LTXDir is where a database's history lives.
func (n *Node) LTXDir(name string) string { return filepath.Join(n.DataDir, "ltx", name) }

// Pos reads <db>-pos from the mount.
func (n *Node) Pos(name string) string {
	n.t.Helper()
	b, err := os.ReadFile(n.Path(name + "-pos"))
	if err != nil {
		n.t.Fatalf("read pos: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Errors returns log lines at ERROR level (a checksum mismatch found by
// -verify-checksums shows up here).
func (n *Node) Errors() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(n.Log()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "level=ERROR") {
			out = append(out, sc.Text())
		}
	}
	return out
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

func openDB(t *testing.T, path, journalMode string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_journal_mode="+journalMode)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(mode, journalMode) {
		t.Fatalf("journal_mode = %s, want %s", mode, journalMode)
	}
	return db
}
