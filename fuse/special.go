package fuse

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// specialNode is a read-only virtual file whose content is computed on every
// read (direct I/O, no caching): .primary, .lag and <db>-pos.
type specialNode struct {
	fs      *FS
	name    string
	content func() (string, bool)
}

var (
	_ fs.NodeOpener   = (*specialNode)(nil)
	_ fs.HandleReader = (*specialNode)(nil)
)

func (s *specialNode) inode() uint64 { return fs.GenerateDynamicInode(1, "litefs-special:"+s.name) }

func (s *specialNode) Attr(ctx context.Context, a *fuse.Attr) error {
	c, ok := s.content()
	if !ok {
		return syscall.ENOENT
	}
	a.Inode = s.inode()
	a.Mode = 0o444
	a.Size = uint64(len(c))
	a.Nlink = 1
	return nil
}

func (s *specialNode) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	if req.Flags&fuse.OpenFlags(syscall.O_ACCMODE) != fuse.OpenReadOnly {
		return nil, syscall.EACCES
	}
	resp.Flags |= fuse.OpenDirectIO
	return s, nil
}

// Read computes the content afresh on every read, so a reader can keep the
// file open and pread it again (a position or lag poll costs one round
// trip, not a lookup, an open and a release).
func (s *specialNode) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	c, ok := s.content()
	if !ok {
		return syscall.ENOENT
	}
	if req.Offset < int64(len(c)) {
		resp.Data = []byte(c[req.Offset:min(int64(len(c)), req.Offset+int64(req.Size))])
	}
	return nil
}

// special returns the virtual file called name in directory n, or nil.
func (f *FS) special(n *Node, name string) *specialNode {
	for _, sp := range f.specials(n) {
		if sp.name == name {
			return sp
		}
	}
	if db, ok := strings.CutSuffix(name, "-pos"); ok {
		if sdb := f.cfg.Store.DB(joinName(n.relPath(), db)); sdb != nil {
			return f.posNode(n, name, db)
		}
	}
	return nil
}

// specials lists the virtual files shown in directory n's listing: only
// .lag and .primary at the root. <db>-pos files answer lookups but stay out
// of listings, so tools that copy or delete "db*" (cp, rm, SQLite's own test
// suite) never trip over a read-only file they did not create.
func (f *FS) specials(n *Node) []*specialNode {
	if n != f.root {
		return nil
	}
	out := []*specialNode{{fs: f, name: ".lag", content: f.lagContent}}
	if _, ok := f.primaryContent(); ok {
		out = append(out, &specialNode{fs: f, name: ".primary", content: f.primaryContent})
	}
	return out
}

// posNode returns the <db>-pos file of a database; one node per name, so
// repeated lookups give the kernel the same node instead of a new one each.
func (f *FS) posNode(dir *Node, name, db string) *specialNode {
	full := joinName(dir.relPath(), db)
	if sp, ok := f.posNodes.Load(full); ok {
		return sp.(*specialNode)
	}
	sp, _ := f.posNodes.LoadOrStore(full, f.newPosNode(name, full))
	return sp.(*specialNode)
}

func (f *FS) newPosNode(name, full string) *specialNode {
	return &specialNode{fs: f, name: name, content: func() (string, bool) {
		sdb := f.cfg.Store.DB(full)
		if sdb == nil {
			return "", false
		}
		pos := sdb.Pos()
		return fmt.Sprintf("%016x/%016x\n", uint64(pos.TXID), uint64(pos.PostApplyChecksum)), true
	}}
}

func (f *FS) lagContent() (string, bool) {
	lag, ok := f.cfg.Status.Lag()
	ms := int64(2147483647)
	if ok {
		ms = lag.Milliseconds()
	}
	return fmt.Sprintf("%+010d\n", ms), true
}

func (f *FS) primaryContent() (string, bool) {
	h := f.cfg.Status.PrimaryHostname()
	return h + "\n", h != ""
}

// Flush and Poll answer ENOSYS like regular handles (see Handle.Flush).
func (s *specialNode) Flush(ctx context.Context, req *fuse.FlushRequest) error { return syscall.ENOSYS }

func (s *specialNode) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return syscall.ENOSYS
}
