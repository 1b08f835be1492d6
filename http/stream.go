package http

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

// handleStream serves POST /stream on the primary: everything the replica
// is missing, then every new transaction as it commits, until the replica
// goes away, the server closes or this node stops being the primary.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Node.IsPrimary() {
		w.Header().Set(headerPrimaryHostname, s.cfg.Node.PrimaryHostname())
		s.httpError(w, r, http.StatusServiceUnavailable, "not the primary")
		return
	}
	var req streamRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
		s.httpError(w, r, http.StatusBadRequest, "decode stream request: %v", err)
		return
	}
	cid := s.cfg.Node.ClusterID()
	if req.ClusterID != "" && req.ClusterID != cid {
		s.httpError(w, r, http.StatusConflict, "cluster id mismatch: replica %q belongs to cluster %s, this primary to %s",
			req.Hostname, req.ClusterID, cid)
		return
	}
	have := map[string]sltx.Pos{}
	for name, p := range req.Positions {
		pos, err := sltx.ParsePos(p)
		if err != nil || ValidateName(name) != nil {
			s.httpError(w, r, http.StatusBadRequest, "bad position %q for %q", p, name)
			return
		}
		have[name] = pos
	}
	w.Header().Set(headerClusterID, cid)
	w.Header().Set(headerPrimaryHostname, s.cfg.Node.Hostname())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	s.log.Info("replica connected", "replica", req.Hostname, "addr", r.RemoteAddr, "databases", len(have))
	st := &streamer{s: s, w: bufio.NewWriterSize(w, 256<<10), flush: rc.Flush, have: have, replica: req.Hostname}
	s.streamsMu.Lock()
	s.streams[st] = true
	s.streamsMu.Unlock()
	defer func() {
		s.streamsMu.Lock()
		delete(s.streams, st)
		s.streamsMu.Unlock()
	}()
	err := st.run(r.Context())
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Info("replica stream ended", "replica", req.Hostname, "err", err)
	} else {
		s.log.Info("replica disconnected", "replica", req.Hostname)
	}
}

// streamer sends one replica what it is missing.
type streamer struct {
	s       *Server
	w       *bufio.Writer
	flush   func() error
	replica string

	mu   sync.Mutex
	have map[string]sltx.Pos // what the replica has, as far as we know
}

// caughtUp reports whether some stream to the replica called host has sent
// every database at its current position.
func (s *Server) caughtUp(host string) bool {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	for st := range s.streams {
		if st.replica == host && st.caughtUp() {
			return true
		}
	}
	return false
}

func (st *streamer) caughtUp() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, db := range st.s.cfg.Store.DBs() {
		if pos := db.Pos(); pos.TXID > 0 && st.have[db.Name()] != pos {
			return false
		}
	}
	return true
}

func (st *streamer) setHave(name string, pos sltx.Pos) {
	st.mu.Lock()
	st.have[name] = pos
	st.mu.Unlock()
}

func (st *streamer) run(ctx context.Context) error {
	s := st.s
	tick := time.NewTicker(s.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		// Take the channel before reading positions so a commit between the
		// two wakes the next wait instead of being missed.
		changed := s.cfg.Store.Changed()
		if !s.cfg.Node.IsPrimary() {
			return errors.New("no longer the primary")
		}
		if err := st.catchUp(ctx); err != nil {
			return err
		}
		if err := writeHeartbeat(st.w, time.Now().UnixMilli()); err != nil {
			return err
		}
		if err := st.send(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-tick.C:
		}
	}
}

func (st *streamer) send() error {
	if err := st.w.Flush(); err != nil {
		return err
	}
	return st.flush()
}

// catchUp sends every database's missing transactions and drops.
func (st *streamer) catchUp(ctx context.Context) error {
	live := map[string]bool{}
	for _, db := range st.s.cfg.Store.DBs() {
		if db.Pos().TXID == 0 {
			continue
		}
		live[db.Name()] = true
		if err := st.catchUpDB(ctx, db); err != nil {
			return fmt.Errorf("stream %s: %w", db.Name(), err)
		}
	}
	for name := range st.have {
		if !live[name] {
			if err := writeDropFrame(st.w, name); err != nil {
				return err
			}
			st.mu.Lock()
			delete(st.have, name)
			st.mu.Unlock()
		}
	}
	return nil
}

func (st *streamer) catchUpDB(ctx context.Context, db *store.DB) error {
	name := db.Name()
	for {
		cur := db.Pos()
		have, ok := st.have[name]
		if ok && have == cur {
			return nil
		}
		if !ok || have.TXID == 0 || have.TXID >= cur.TXID {
			// New to the replica, ahead of us, or the same TXID with another
			// checksum (it committed something we never had): start over.
			if ok && have.TXID != 0 {
				st.s.log.Warn("replica position diverges from the primary: sending a snapshot",
					"replica", st.replica, "db", name, "replica_pos", have, "primary_pos", cur)
			}
			return st.sendSnapshot(ctx, db)
		}
		next, err := st.sendLTX(db, have)
		if errors.Is(err, errNotInHistory) {
			st.s.log.Info("replica is behind the retained history: sending a snapshot",
				"replica", st.replica, "db", name, "replica_pos", have, "primary_pos", cur)
			return st.sendSnapshot(ctx, db)
		} else if err != nil {
			return err
		}
		st.setHave(name, next)
		// Flush after every file: the replica applies as soon as it arrives.
		if err := st.send(); err != nil {
			return err
		}
	}
}

var errNotInHistory = errors.New("transaction not in retained history")

// sendLTX sends the transaction after have, if it follows on from it.
func (st *streamer) sendLTX(db *store.DB, have sltx.Pos) (sltx.Pos, error) {
	f, err := os.Open(db.LTXPath(have.TXID + 1))
	if os.IsNotExist(err) {
		return have, errNotInHistory
	} else if err != nil {
		return have, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return have, err
	}
	hb := make([]byte, sltx.HeaderSize)
	tb := make([]byte, sltx.TrailerSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		return have, errNotInHistory // being removed by retention, or partial
	}
	if _, err := f.ReadAt(tb, fi.Size()-sltx.TrailerSize); err != nil {
		return have, errNotInHistory
	}
	var hdr sltx.Header
	var trailer sltx.Trailer
	if hdr.UnmarshalBinary(hb) != nil || trailer.UnmarshalBinary(tb) != nil {
		return have, errNotInHistory
	}
	if hdr.PreApplyChecksum != have.PostApplyChecksum && !hdr.IsSnapshot() {
		// Same TXID, different history: the replica diverged earlier.
		return have, errNotInHistory
	}
	if err := writeLTXFrame(st.w, db.Name(), fi.Size()); err != nil {
		return have, err
	}
	if _, err := io.Copy(st.w, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return have, err
	}
	return sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum), nil
}

// sendSnapshot copies the database locally (commits wait only for that
// copy) and streams the copy at the replica's pace. With a snapshotter that
// reports progress, streaming starts with the first chunk copied instead of
// after the whole copy.
func (st *streamer) sendSnapshot(ctx context.Context, db *store.DB) error {
	tmp, err := os.CreateTemp(st.s.cfg.Store.TmpDir(), "stream-snapshot-*")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	prog := newSnapshotProgress()
	// The copier uses tmp's descriptor: tmp is closed only after it is done
	// (deferred calls run in reverse: cancel, wait, then close).
	defer prog.waitDone()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var info capture.SnapshotInfo
		var err error
		if ps, ok := st.s.cfg.Snapshot.(ProgressSnapshotter); ok {
			info, err = ps.SnapshotProgress(ctx, db.Name(), tmp, prog.update)
		} else {
			info, err = st.s.cfg.Snapshot.Snapshot(ctx, db.Name(), tmp)
		}
		if err == nil {
			prog.update(info, int64(info.PageSize)*int64(info.Commit))
		}
		prog.finish(err)
	}()
	info, _, err := prog.wait(0)
	if err != nil {
		return err
	}
	h := snapshotHeader{TXID: info.Pos.TXID, Checksum: info.Pos.PostApplyChecksum, PageSize: info.PageSize, Commit: info.Commit}
	if err := writeSnapshotFrame(st.w, db.Name(), h); err != nil {
		return err
	}
	if err := st.send(); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < h.size(); {
		_, ready, err := prog.wait(sent)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(onlyWriter{st.w}, io.NewSectionReader(tmp, sent, ready-sent), buf); err != nil {
			return err
		}
		sent = ready
	}
	if _, _, err := prog.wait(h.size()); err != nil {
		return err
	}
	st.setHave(db.Name(), info.Pos)
	st.s.log.Info("sent snapshot", "replica", st.replica, "db", db.Name(), "pos", info.Pos, "bytes", h.size())
	return st.send()
}

// ProgressSnapshotter is a Snapshotter that reports how much of the image
// is final while it copies (capture.Registry).
type ProgressSnapshotter interface {
	SnapshotProgress(ctx context.Context, name string, dst *os.File, progress func(capture.SnapshotInfo, int64)) (capture.SnapshotInfo, error)
}

// snapshotProgress hands a snapshot's progress from the copying goroutine
// to the sending one.
type snapshotProgress struct {
	mu       sync.Mutex
	cond     *sync.Cond
	info     capture.SnapshotInfo
	haveInfo bool
	ready    int64
	done     bool
	err      error
}

func newSnapshotProgress() *snapshotProgress {
	p := &snapshotProgress{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *snapshotProgress) update(info capture.SnapshotInfo, ready int64) {
	p.mu.Lock()
	p.info, p.haveInfo, p.ready = info, true, max(p.ready, ready)
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *snapshotProgress) finish(err error) {
	p.mu.Lock()
	p.done, p.err = true, err
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *snapshotProgress) waitDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.done {
		p.cond.Wait()
	}
}

// wait returns once the position is known and more than after bytes are
// final, or the whole image is (after == size), or the copy failed.
func (p *snapshotProgress) wait(after int64) (capture.SnapshotInfo, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.err != nil {
			return p.info, p.ready, p.err
		}
		size := int64(p.info.PageSize) * int64(p.info.Commit)
		if p.haveInfo && (p.ready > after || (p.done && p.ready >= size)) {
			return p.info, p.ready, nil
		}
		if p.done && !p.haveInfo {
			return p.info, 0, errors.New("snapshot produced no image")
		}
		p.cond.Wait()
	}
}

// onlyWriter hides ReadFrom so CopyBuffer uses its large buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
