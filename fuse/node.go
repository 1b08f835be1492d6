package fuse

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// Node is a file, directory or symlink in the mount, backed by the file of
// the same relative path under the data directory.
type Node struct {
	fs  *FS
	ino uint64
	dir bool

	mu      sync.Mutex
	parent  *Node
	name    string
	writers int // open writable handles; the last close may be a commit point
	opens   int // open handles of any kind
}

var (
	_ fs.NodeRequestLookuper = (*Node)(nil)
	_ fs.NodeCreater         = (*Node)(nil)
	_ fs.NodeOpener          = (*Node)(nil)
	_ fs.NodeSetattrer       = (*Node)(nil)
	_ fs.NodeRenamer         = (*Node)(nil)
	_ fs.NodeRemover         = (*Node)(nil)
	_ fs.NodeFsyncer         = (*Node)(nil)
	_ fs.NodeForgetter       = (*Node)(nil)
	_ fs.HandleReadDirAller  = (*Node)(nil)
)

// relPath is the node's path relative to the mount root, with slashes.
func (n *Node) relPath() string {
	n.mu.Lock()
	parent, name := n.parent, n.name
	n.mu.Unlock()
	if parent == nil {
		return name
	}
	return joinName(parent.relPath(), name)
}

func (n *Node) path() string { return n.fs.cfg.Store.Path(n.relPath()) }

func (n *Node) childPath(name string) (rel, abs string) {
	rel = joinName(n.relPath(), name)
	return rel, n.fs.cfg.Store.Path(rel)
}

// Attr implements fs.Node.
func (n *Node) Attr(ctx context.Context, a *fuse.Attr) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(n.path(), &st); err != nil {
		return errno(err)
	}
	fillAttr(a, &st)
	return nil
}

// Lookup implements fs.NodeRequestLookuper.
func (n *Node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	_, abs := n.childPath(req.Name)
	var st syscall.Stat_t
	if err := syscall.Lstat(abs, &st); err != nil {
		if sp := n.fs.special(n, req.Name); sp != nil && errors.Is(err, syscall.ENOENT) {
			resp.EntryValid = 0
			return sp, nil
		}
		// SQLite looks for a hot journal before every read transaction in
		// rollback mode; let the kernel remember that there is none. Only
		// helper files: a virtual <db>-pos file can appear without a create
		// passing through the kernel.
		if kind, _ := classify(req.Name); kind != kindDB && errors.Is(err, syscall.ENOENT) {
			return nil, fs.NegativeEntry{Valid: cacheTTL}
		}
		return nil, errno(err)
	}
	resp.EntryValid = cacheTTL
	return n.fs.nodeFor(st.Ino, n, req.Name, st.Mode&syscall.S_IFMT == syscall.S_IFDIR), nil
}

// ReadDirAll implements fs.HandleReadDirAller for directories.
func (n *Node) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	ents, err := os.ReadDir(n.path())
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.Dirent, 0, len(ents)+2)
	names := make(map[string]bool, len(ents))
	for _, e := range ents {
		d := fuse.Dirent{Name: e.Name(), Type: direntType(e.Type())}
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				d.Inode = st.Ino
			}
		}
		names[e.Name()] = true
		out = append(out, d)
	}
	for _, sp := range n.fs.specials(n) {
		if !names[sp.name] {
			out = append(out, fuse.Dirent{Name: sp.name, Inode: sp.inode(), Type: fuse.DT_File})
		}
	}
	return out, nil
}

// Open implements fs.NodeOpener.
func (n *Node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if req.Dir {
		return n, nil
	}
	if req.Flags&fuse.OpenFlags(syscall.O_ACCMODE) != fuse.OpenReadOnly || req.Flags&fuse.OpenTruncate != 0 {
		if err := n.fs.readOnly(req.Header, n.relPath(), false); err != nil {
			return nil, err
		}
	}
	return n.open(int(req.Flags), 0, resp)
}

func (n *Node) open(flags int, perm os.FileMode, resp *fuse.OpenResponse) (*Handle, error) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	// The capture layer reads old page contents through the same descriptor,
	// and WriteAt needs a descriptor without O_APPEND (the kernel already
	// turned appends into offsets).
	bflags := backingFlags(flags)
	if writable {
		bflags |= syscall.O_RDWR
	}
	f, err := openFile(n.path(), bflags, perm)
	if err != nil && writable && errors.Is(err, syscall.EACCES) && flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		f, err = openFile(n.path(), (bflags&^syscall.O_RDWR)|syscall.O_WRONLY, perm)
	}
	if err != nil {
		return nil, errno(err)
	}
	return n.newHandle(f, flags, resp)
}

// backingFlags are the open flags for the backing file, access mode aside:
// no O_APPEND (the kernel already turned appends into offsets, and WriteAt
// refuses O_APPEND files) and no O_TRUNC (truncation goes through the
// capture layer in newHandle).
func backingFlags(flags int) int {
	return flags &^ (syscall.O_APPEND | syscall.O_TRUNC | syscall.O_ACCMODE)
}

// newHandle wraps an open backing file, applying O_TRUNC through the capture
// layer and counting writers.
func (n *Node) newHandle(f *os.File, flags int, resp *fuse.OpenResponse) (*Handle, error) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if flags&syscall.O_TRUNC != 0 && writable {
		if err := n.truncate(f, 0); err != nil {
			_ = f.Close()
			return nil, errno(err)
		}
	}
	n.mu.Lock()
	n.opens++
	if writable {
		n.writers++
	}
	n.mu.Unlock()
	// Journals and WALs are written in small pieces (a 24-byte frame header,
	// then a page) that the page cache would split further at page
	// boundaries, one round trip each; SQLite rarely reads them back. So they
	// bypass the cache, and databases keep theirs across opens.
	if kind, _ := classify(n.relPath()); kind == kindWAL || kind == kindJournal {
		resp.Flags |= fuse.OpenDirectIO
	} else {
		resp.Flags |= fuse.OpenKeepCache
	}
	return &Handle{node: n, file: f, writable: writable}, nil
}

// Create implements fs.NodeCreater.
func (n *Node) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	rel, abs := n.childPath(req.Name)
	if err := n.fs.readOnly(req.Header, rel, true); err != nil {
		return nil, nil, err
	}
	if kind, db := classify(rel); kind == kindWAL && !n.fs.replica() {
		n.fs.cfg.Capture.DB(db).ResetWAL() // a new WAL file has no frames
	}
	flags := int(req.Flags) | syscall.O_CREAT
	f, err := openFile(abs, backingFlags(flags)|syscall.O_RDWR, req.Mode.Perm()&^req.Umask)
	if err != nil {
		return nil, nil, errno(err)
	}
	n.fs.chown(abs, req.Header)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, nil, errno(err)
	}
	child := n.fs.nodeFor(st.Ino, n, req.Name, false)
	h, err := child.newHandle(f, flags, &resp.OpenResponse)
	if err != nil {
		return nil, nil, err
	}
	fillAttr(&resp.Attr, &st)
	resp.EntryValid = cacheTTL
	return child, h, nil
}

// Mkdir implements fs.NodeMkdirer.
func (n *Node) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	rel, abs := n.childPath(req.Name)
	if err := n.fs.readOnly(req.Header, rel, true); err != nil {
		return nil, err
	}
	if err := os.Mkdir(abs, req.Mode.Perm()&^req.Umask|(req.Mode&(os.ModeSticky|os.ModeSetgid))); err != nil {
		return nil, errno(err)
	}
	n.fs.chown(abs, req.Header)
	return n.child(abs, req.Name)
}

// child returns the node of a file just created at abs under the name name.
func (n *Node) child(abs, name string) (fs.Node, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(abs, &st); err != nil {
		return nil, errno(err)
	}
	return n.fs.nodeFor(st.Ino, n, name, st.Mode&syscall.S_IFMT == syscall.S_IFDIR), nil
}

// Symlink implements fs.NodeSymlinker.
func (n *Node) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	rel, abs := n.childPath(req.NewName)
	if err := n.fs.readOnly(req.Header, rel, true); err != nil {
		return nil, err
	}
	if err := os.Symlink(req.Target, abs); err != nil {
		return nil, errno(err)
	}
	if n.fs.uid == 0 {
		_ = os.Lchown(abs, int(req.Uid), int(req.Gid))
	}
	return n.child(abs, req.NewName)
}

// Readlink implements fs.NodeReadlinker.
func (n *Node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	s, err := os.Readlink(n.path())
	return s, errno(err)
}

// Link implements fs.NodeLinker: a hard link is the same node under a new name.
func (n *Node) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	src, ok := old.(*Node)
	if !ok {
		return nil, syscall.EPERM
	}
	rel, abs := n.childPath(req.NewName)
	if err := n.fs.readOnly(req.Header, rel, true); err != nil {
		return nil, err
	}
	if err := os.Link(src.path(), abs); err != nil {
		return nil, errno(err)
	}
	return src, nil
}

// Mknod implements fs.NodeMknoder for FIFOs and sockets tools may create.
func (n *Node) Mknod(ctx context.Context, req *fuse.MknodRequest) (fs.Node, error) {
	rel, abs := n.childPath(req.Name)
	if err := n.fs.readOnly(req.Header, rel, true); err != nil {
		return nil, err
	}
	mode := uint32(req.Mode.Perm() &^ req.Umask)
	switch {
	case req.Mode&os.ModeNamedPipe != 0:
		mode |= syscall.S_IFIFO
	case req.Mode&os.ModeSocket != 0:
		mode |= syscall.S_IFSOCK
	case req.Mode.IsRegular():
		mode |= syscall.S_IFREG
	default:
		return nil, syscall.EPERM
	}
	if err := syscall.Mknod(abs, mode, int(req.Rdev)); err != nil {
		return nil, errno(err)
	}
	n.fs.chown(abs, req.Header)
	return n.child(abs, req.Name)
}

// Setattr implements fs.NodeSetattrer.
func (n *Node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	abs := n.path()
	if req.Valid.Size() || req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		if err := n.fs.readOnly(req.Header, n.relPath(), false); err != nil {
			return err
		}
	}
	if req.Valid.Size() {
		f, err := openFile(abs, os.O_RDWR, 0)
		if err != nil {
			return errno(err)
		}
		err = n.truncate(f, int64(req.Size))
		_ = f.Close()
		if err != nil {
			return errno(n.fs.fail("truncate", n.relPath(), err))
		}
	}
	if req.Valid.Mode() {
		if err := os.Chmod(abs, req.Mode&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
			return errno(err)
		}
	}
	if req.Valid.Uid() || req.Valid.Gid() {
		uid, gid := -1, -1
		if req.Valid.Uid() {
			uid = int(req.Uid)
		}
		if req.Valid.Gid() {
			gid = int(req.Gid)
		}
		if err := os.Lchown(abs, uid, gid); err != nil {
			return errno(err)
		}
	}
	if req.Valid.Atime() || req.Valid.Mtime() {
		ts := []syscall.Timespec{{Nsec: omitTime}, {Nsec: omitTime}}
		if req.Valid.Atime() {
			ts[0] = timespec(req.Atime, req.Valid.AtimeNow())
		}
		if req.Valid.Mtime() {
			ts[1] = timespec(req.Mtime, req.Valid.MtimeNow())
		}
		if err := utimensat(abs, ts); err != nil {
			return errno(err)
		}
	}
	return n.Attr(ctx, &resp.Attr)
}

// truncate routes a size change through the capture layer by file kind.
func (n *Node) truncate(f *os.File, size int64) error {
	kind, db := classify(n.relPath())
	c := n.fs.cfg.Capture
	if n.fs.replica() {
		kind = kindSHM // not captured
	}
	switch kind {
	case kindDB:
		return c.DB(db).TruncateDB(f, size)
	case kindJournal:
		return c.DB(db).TruncateJournal(func() error { return f.Truncate(size) }, size)
	case kindWAL:
		return c.DB(db).TruncateWAL(func() error { return f.Truncate(size) }, size)
	}
	return f.Truncate(size)
}

// Fsync implements fs.NodeFsyncer.
func (n *Node) Fsync(ctx context.Context, req *fuse.FsyncRequest) error {
	f, err := openFile(n.path(), os.O_RDONLY, 0)
	if err != nil {
		return errno(err)
	}
	defer f.Close()
	if n.dir || req.Dir {
		return errno(f.Sync())
	}
	kind, db := classify(n.relPath())
	c := n.fs.cfg.Capture
	if n.fs.replica() {
		kind = kindSHM // not captured
	}
	switch kind {
	case kindDB:
		err = c.DB(db).SyncDB(f)
	case kindJournal:
		err = c.DB(db).SyncJournal(f)
	case kindWAL:
		err = c.DB(db).SyncWAL(f)
	default:
		err = f.Sync()
	}
	return n.fs.fail("fsync", n.relPath(), err)
}

// Remove implements fs.NodeRemover.
func (n *Node) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	rel, abs := n.childPath(req.Name)
	if err := n.fs.readOnly(req.Header, rel, false); err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(abs, &st); err != nil {
		return errno(err)
	}
	if req.Dir {
		if err := syscall.Rmdir(abs); err != nil {
			return errno(err)
		}
	} else if err := n.fs.removeFile(rel, func() error { return syscall.Unlink(abs) }); err != nil {
		return errno(err)
	}
	if req.Dir || st.Nlink <= 1 {
		n.fs.dropInode(st.Ino)
	}
	return nil
}

// removeFile deletes (or renames away) the file at rel, telling the capture
// layer: a journal or WAL going away is a commit point, a database going
// away takes its history with it.
func (f *FS) removeFile(rel string, remove func() error) error {
	kind, db := classify(rel)
	c := f.cfg.Capture
	if f.replica() {
		return remove()
	}
	switch kind {
	case kindJournal:
		return f.fail("remove journal", rel, c.DB(db).RemoveJournal(remove))
	case kindWAL:
		return f.fail("remove wal", rel, c.DB(db).RemoveWAL(remove))
	case kindDB:
		if err := remove(); err != nil {
			return err
		}
		return f.fail("remove database", rel, c.Remove(db))
	}
	return remove()
}

// Rename implements fs.NodeRenamer.
func (n *Node) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	nd, ok := newDir.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	oldRel, oldAbs := n.childPath(req.OldName)
	newRel, newAbs := nd.childPath(req.NewName)
	if n.fs.replica() {
		n.fs.logDenied(oldRel)
		return syscall.EACCES
	}
	var src, dst syscall.Stat_t
	if err := syscall.Lstat(oldAbs, &src); err != nil {
		return errno(err)
	}
	dstErr := syscall.Lstat(newAbs, &dst)
	isDir := src.Mode&syscall.S_IFMT == syscall.S_IFDIR

	rename := func() error { return os.Rename(oldAbs, newAbs) }
	var err error
	if isDir {
		if err = rename(); err == nil {
			err = n.fs.renameTree(oldRel, newRel)
		}
	} else if kind, _ := classify(oldRel); kind == kindDB {
		if err = rename(); err == nil {
			err = n.fs.fail("rename database", oldRel, n.fs.cfg.Capture.Rename(oldRel, newRel))
		}
	} else {
		err = n.fs.removeFile(oldRel, rename)
	}
	if kind, db := classify(newRel); err == nil && kind == kindWAL {
		n.fs.cfg.Capture.DB(db).ResetWAL() // frames we never saw written
	}
	if err != nil {
		return errno(err)
	}
	if dstErr == nil && dst.Ino != src.Ino && dst.Nlink <= 1 {
		n.fs.dropInode(dst.Ino)
	}
	if moved := n.fs.cachedNode(src.Ino); moved != nil {
		moved.mu.Lock()
		moved.parent, moved.name = nd, req.NewName
		moved.mu.Unlock()
	}
	return nil
}

// renameTree moves the history of databases inside a renamed directory.
func (f *FS) renameTree(oldRel, newRel string) error {
	for _, db := range f.cfg.Store.DBs() {
		if name := db.Name(); strings.HasPrefix(name, oldRel+"/") {
			if err := f.cfg.Capture.Rename(name, newRel+strings.TrimPrefix(name, oldRel)); err != nil {
				return f.fail("rename database", name, err)
			}
		}
	}
	return nil
}

// Forget implements fs.NodeForgetter.
func (n *Node) Forget() {
	if n.ino != 0 {
		n.fs.dropNode(n)
	}
}

// fail logs capture errors, which an application only sees as EIO.
func (f *FS) fail(op, name string, err error) error {
	if err != nil {
		var en syscall.Errno
		if !errors.As(err, &en) {
			f.log.Error(op, "name", name, "err", err)
		}
	}
	return err
}

func (f *FS) chown(path string, h fuse.Header) {
	if f.uid == 0 && (h.Uid != 0 || h.Gid != 0) {
		_ = os.Lchown(path, int(h.Uid), int(h.Gid))
	}
}

var _ = time.Now
