package fuse

import (
	"context"
	"io"
	"os"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// Handle is an open file: a descriptor on the backing file.
type Handle struct {
	node     *Node
	file     *os.File
	writable bool
}

var (
	_ fs.HandleReader   = (*Handle)(nil)
	_ fs.HandleWriter   = (*Handle)(nil)
	_ fs.HandleReleaser = (*Handle)(nil)
	_ fs.HandleFlusher  = (*Handle)(nil)
)

// Read implements fs.HandleReader. Most reads never get here: the kernel
// serves them from its page cache. The buffer is not pooled: bazil encodes
// the response after Read returns, so a recycled buffer could be overwritten
// by a concurrent read first.
func (h *Handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := make([]byte, req.Size)
	n, err := h.file.ReadAt(buf, req.Offset)
	if err != nil && err != io.EOF {
		return errno(err)
	}
	resp.Data = buf[:n]
	return nil
}

// Write implements fs.HandleWriter, routing by file kind so the capture layer
// sees every change to a database, its journal and its WAL.
func (h *Handle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	rel := h.node.relPath()
	kind, db := classify(rel)
	c := h.node.fs.cfg.Capture
	var n int
	var err error
	if h.node.fs.replica() {
		// Not captured: a replica's databases change only by applies, and
		// this process's own writes (settling files after a demotion).
		if kind != kindSHM && !h.node.fs.isSelf(req.Header.Pid) {
			h.node.fs.logDenied(rel)
			return syscall.EACCES
		}
		kind = kindSHM
	}
	switch kind {
	case kindDB:
		n, err = c.DB(db).WriteDB(h.file, req.Data, req.Offset)
	case kindJournal:
		n, err = c.DB(db).WriteJournal(h.file, req.Data, req.Offset)
	case kindWAL:
		n, err = c.DB(db).WriteWAL(h.file, req.Data, req.Offset)
	default:
		n, err = h.file.WriteAt(req.Data, req.Offset)
	}
	resp.Size = n
	return errno(h.node.fs.fail("write", rel, err))
}

// Flush implements fs.HandleFlusher. Writes are not buffered here, and
// ENOSYS makes the kernel stop sending FLUSH on every close. That also
// matters for this process's own descriptors on the mount (the apply
// locks): a FLUSH sent while it is being killed would never be answered and
// its exit would hang.
func (h *Handle) Flush(ctx context.Context, req *fuse.FlushRequest) error { return syscall.ENOSYS }

// Release implements fs.HandleReleaser. Closing the last writable handle on a
// database written without a journal commits it.
func (h *Handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	err := h.file.Close()
	n := h.node
	n.mu.Lock()
	n.opens--
	n.mu.Unlock()
	if !h.writable {
		return errno(err)
	}
	n.mu.Lock()
	n.writers--
	last := n.writers == 0
	n.mu.Unlock()
	if rel := n.relPath(); last && !n.fs.replica() {
		if kind, db := classify(rel); kind == kindDB {
			if cerr := n.fs.fail("commit on close", rel, n.fs.cfg.Capture.DB(db).ReleaseDB()); err == nil {
				err = cerr
			}
		}
	}
	return errno(err)
}

// Poll implements fs.HandlePoller. ENOSYS makes the kernel stop asking: Go
// registers every file it opens with epoll, which would otherwise cost a
// round trip per open (and, for this process's own opens, a request to
// itself).
func (h *Handle) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return syscall.ENOSYS
}
