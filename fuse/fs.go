// Package fuse serves the mount: a passthrough filesystem over the data
// directory whose database, journal and WAL writes are routed through the
// capture layer, plus the virtual files .primary, .lag and <db>-pos.
//
// Design notes for speed: POSIX locks are left to the kernel (no round trip
// per lock call); attributes and directory entries are cached by the kernel
// for a long time and the page cache is kept across opens, which is safe on
// a primary because every change to these files passes through this process.
// Replicas will invalidate explicitly when they apply a transaction.
package fuse

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/store"
)

// cacheTTL is how long the kernel may cache attributes and entries.
const cacheTTL = time.Hour

// Status is what the virtual files report about the node's role.
type Status interface {
	// Writable reports whether this node accepts writes: it is the primary
	// and not handing the role off. It may change at any time (lease
	// changes), so it is asked on every change.
	Writable() bool
	// PrimaryHostname is "" on the primary itself.
	PrimaryHostname() string
	// Lag is the replication lag; ok is false before the first sync.
	Lag() (lag time.Duration, ok bool)
}

// Config configures the filesystem.
type Config struct {
	MountDir   string
	AllowOther bool
	Debug      bool
	Store      *store.Store
	Capture    *capture.Registry
	Status     Status
	Logger     *slog.Logger
}

// FS is the mounted filesystem.
type FS struct {
	cfg  Config
	log  *slog.Logger
	root *Node
	uid  int
	pid  int

	denied    sync.Map // names whose refused writes were logged
	posNodes  sync.Map // database name -> its <db>-pos node
	applyGaps sync.Map // database name -> applyGap of its last apply

	lockMu    sync.Mutex
	lockFiles map[string]*os.File // mount-side descriptors for apply locks

	mu    sync.Mutex
	nodes map[uint64]*Node // backing inode number -> node, so the kernel sees one inode per file

	conn *fuse.Conn
	srv  *fs.Server
	done chan error
}

// New returns a filesystem over the store's files directory.
func New(cfg Config) *FS {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &FS{cfg: cfg, log: cfg.Logger, nodes: map[uint64]*Node{}, uid: os.Geteuid(), pid: os.Getpid(), lockFiles: map[string]*os.File{}}
	f.root = &Node{fs: f, dir: true}
	return f
}

// Root implements fs.FS.
func (f *FS) Root() (fs.Node, error) { return f.root, nil }

// Mount mounts the filesystem and serves it in the background until
// Unmount. It returns once the mount is usable.
func (f *FS) Mount() error {
	if err := os.MkdirAll(f.cfg.MountDir, 0o755); err != nil {
		return fmt.Errorf("create mount dir: %w", err)
	}
	opts := []fuse.MountOption{
		fuse.FSName("litefs"), fuse.Subtype("litefs"),
		fuse.MaxReadahead(128 << 10), fuse.AsyncRead(),
	}
	if f.cfg.AllowOther {
		opts = append(opts, fuse.AllowOther())
	}
	conn, err := fuse.Mount(f.cfg.MountDir, opts...)
	if err != nil {
		return fmt.Errorf("mount %s: %w", f.cfg.MountDir, err)
	}
	f.conn = conn
	var scfg fs.Config
	if f.cfg.Debug {
		scfg.Debug = func(msg interface{}) { f.log.Debug("fuse", "msg", fmt.Sprint(msg)) }
	}
	f.srv = fs.New(conn, &scfg)
	f.done = make(chan error, 1)
	go func() { f.done <- f.srv.Serve(f) }()
	f.prime()
	return nil
}

// prime opens and closes a file of the mount from this process while it
// can still answer, so the kernel learns that FLUSH and POLL are not
// implemented. Otherwise the first close of one of this process's own
// descriptors on the mount could come while the process is being killed,
// as a FLUSH nobody is left to answer, and its exit would hang.
func (f *FS) prime() {
	fd, err := os.Open(filepath.Join(f.cfg.MountDir, ".lag")) // registers with epoll: POLL
	if err != nil {
		f.log.Warn("priming the mount", "err", err)
		return
	}
	_ = fd.Close() // FLUSH
}

// Unmount unmounts and waits for the server to stop.
func (f *FS) Unmount(ctx context.Context) error {
	if f.conn == nil {
		return nil
	}
	// Descriptors this process holds on its own mount would keep it busy.
	f.lockMu.Lock()
	for name, fd := range f.lockFiles {
		_ = fd.Close()
		delete(f.lockFiles, name)
	}
	f.lockMu.Unlock()
	var err error
	for i := 0; i < 50; i++ {
		if err = fuse.Unmount(f.cfg.MountDir); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unmount %s: %w", f.cfg.MountDir, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		// Busy: detach lazily so the process can still exit cleanly.
		if lerr := syscall.Unmount(f.cfg.MountDir, syscall.MNT_DETACH); lerr != nil {
			return fmt.Errorf("unmount %s: %w", f.cfg.MountDir, err)
		}
	}
	select {
	case err = <-f.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = f.conn.Close()
	f.conn = nil
	return err
}

// Statfs reports the space of the data directory.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.cfg.Store.Path(""), &st); err != nil {
		return err
	}
	resp.Blocks, resp.Bfree, resp.Bavail = st.Blocks, st.Bfree, st.Bavail
	resp.Files, resp.Ffree = st.Files, st.Ffree
	resp.Bsize, resp.Namelen, resp.Frsize = uint32(st.Bsize), uint32(st.Namelen), uint32(st.Frsize)
	return nil
}

// nodeFor returns the node for a backing inode, creating it under parent/name.
func (f *FS) nodeFor(ino uint64, parent *Node, name string, dir bool) *Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[ino]; n != nil {
		n.mu.Lock()
		n.parent, n.name = parent, name
		n.mu.Unlock()
		return n
	}
	n := &Node{fs: f, ino: ino, parent: parent, name: name, dir: dir}
	f.nodes[ino] = n
	return n
}

// dropNode forgets the node of a deleted inode, so a new file that reuses the
// inode number gets a new kernel inode instead of the old one's page cache.
func (f *FS) dropNode(n *Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nodes[n.ino] == n {
		delete(f.nodes, n.ino)
	}
}

// dropInode forgets whatever node holds a deleted inode number.
func (f *FS) dropInode(ino uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nodes, ino)
}

func (f *FS) cachedNode(ino uint64) *Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[ino]
}
