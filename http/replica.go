package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replfs/litefs/store"
	sltx "github.com/superfly/ltx"
)

// PrimaryFinder says where the primary is; the lease provides it.
type PrimaryFinder interface {
	// PrimaryURL returns the primary's API URL and hostname, or ok=false
	// while no primary is known or this node is the primary.
	PrimaryURL(ctx context.Context) (url, hostname string, ok bool)
}

// ClusterIDs is where a replica keeps the cluster ID it belongs to.
type ClusterIDs interface {
	ClusterID() string
	// AdoptClusterID records id if the node has none and reports an error
	// if it belongs to a different cluster.
	AdoptClusterID(id string) error
}

// ReplicaConfig configures a Replica.
type ReplicaConfig struct {
	Store    *store.Store
	Primary  PrimaryFinder
	Cluster  ClusterIDs
	Hostname string
	// ReconnectDelay is the first wait after a failed stream; it doubles up
	// to MaxReconnectDelay while failures continue.
	ReconnectDelay    time.Duration
	MaxReconnectDelay time.Duration
	Client            *http.Client
	Logger            *slog.Logger
}

// Replica follows the primary's stream and applies it to the local store.
type Replica struct {
	cfg ReplicaConfig
	log *slog.Logger

	lastPrimaryTS atomic.Int64 // primary clock (Unix ms) of the last heartbeat, 0 before any
	behind        atomic.Bool  // a frame arrived and no heartbeat after it yet
	primaryHost   atomic.Value // string

	mu    sync.Mutex
	dirty map[string]bool // databases applied to since the last sync

	buf []byte // receive buffer for LTX frames, reused by the stream goroutine
}

// NewReplica returns a replica client; Run drives it.
func NewReplica(cfg ReplicaConfig) *Replica {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconnectDelay <= 0 {
		cfg.ReconnectDelay = time.Second
	}
	if cfg.MaxReconnectDelay < cfg.ReconnectDelay {
		cfg.MaxReconnectDelay = max(30*time.Second, cfg.ReconnectDelay)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{
			DisableCompression:    true,
			ResponseHeaderTimeout: 30 * time.Second,
		}}
	}
	r := &Replica{cfg: cfg, log: cfg.Logger, dirty: map[string]bool{}}
	r.primaryHost.Store("")
	return r
}

// Lag is the time since the primary's last heartbeat: how stale the data
// may be. ok is false before the first heartbeat.
func (r *Replica) Lag() (time.Duration, bool) {
	ts := r.lastPrimaryTS.Load()
	if ts == 0 {
		return 0, false
	}
	return max(0, time.Since(time.UnixMilli(ts))), true
}

// CaughtUp reports whether, as far as this replica knows, it has every
// transaction of the primary it last streamed from: the last frame it got
// was a heartbeat, which the primary sends only when it has nothing more.
func (r *Replica) CaughtUp() bool { return !r.behind.Load() }

// PrimaryHostname is the hostname of the primary last streamed from.
func (r *Replica) PrimaryHostname() string { return r.primaryHost.Load().(string) }

// Run streams from the primary until ctx is done, reconnecting with backoff
// after every error.
func (r *Replica) Run(ctx context.Context) error {
	delay := r.cfg.ReconnectDelay
	for ctx.Err() == nil {
		url, host, ok := r.cfg.Primary.PrimaryURL(ctx)
		if !ok {
			if !sleep(ctx, r.cfg.ReconnectDelay) {
				break
			}
			continue
		}
		if host != "" {
			r.primaryHost.Store(host)
		}
		start := time.Now()
		err := r.stream(ctx, url)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			delay = r.cfg.ReconnectDelay // it worked for a while: not a persistent failure
		}
		r.log.Warn("replication stream ended; reconnecting", "primary", url, "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			break
		}
		delay = min(2*delay, r.cfg.MaxReconnectDelay)
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// stream runs one connection to the primary.
func (r *Replica) stream(ctx context.Context, url string) error {
	req := streamRequest{ClusterID: r.cfg.Cluster.ClusterID(), Hostname: r.cfg.Hostname, Positions: map[string]string{}}
	for _, db := range r.cfg.Store.DBs() {
		if pos := db.Pos(); pos.TXID > 0 {
			req.Positions[db.Name()] = pos.String()
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(url, "/")+"/stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := r.cfg.Client.Do(hreq)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("primary answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := r.cfg.Cluster.AdoptClusterID(resp.Header.Get(headerClusterID)); err != nil {
		return err
	}
	if h := resp.Header.Get(headerPrimaryHostname); h != "" {
		r.primaryHost.Store(h)
	}
	r.log.Info("connected to primary", "primary", url, "hostname", r.PrimaryHostname(), "databases", len(req.Positions))

	// A primary that stops sending (not even heartbeats) is as good as gone.
	// Silence is counted from the last byte received, not from the start of
	// a frame: a snapshot may take far longer than idleTimeout to arrive.
	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	br := bufio.NewReaderSize(idleReader{resp.Body, idle}, 256<<10)

	// Applied transactions are made durable in the background, off the
	// path from the primary's commit to visibility here; many share one
	// fsync under load.
	syncReq := make(chan struct{}, 1)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		r.syncLoop(syncReq)
	}()
	defer func() {
		close(syncReq)
		<-syncDone
	}()
	for {
		idle.Reset(idleTimeout)
		t, err := readType(br)
		if err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		if err := r.handle(ctx, br, t); err != nil {
			return err
		}
		if br.Buffered() == 0 {
			select {
			case syncReq <- struct{}{}:
			default: // a sync is already pending and will include this
			}
		}
	}
}

// syncInterval is the shortest time between two syncs of applied
// transactions: how much a replica may lose in an OS crash (transactions
// the primary still has and sends again).
const syncInterval = 50 * time.Millisecond

// idleTimeout ends a stream that has been silent for this long; the primary
// sends a heartbeat every second. (A variable for tests.)
var idleTimeout = 10 * time.Second

// idleReader restarts the idle timer whenever bytes arrive.
type idleReader struct {
	r    io.Reader
	idle *time.Timer
}

func (ir idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.idle.Reset(idleTimeout)
	}
	return n, err
}

func (r *Replica) handle(ctx context.Context, br *bufio.Reader, t frameType) error {
	r.behind.Store(t != frameHeartbeat)
	if t == frameHeartbeat {
		var ts int64
		if err := binary.Read(br, binary.BigEndian, &ts); err != nil {
			return fmt.Errorf("read heartbeat: %w", err)
		}
		r.lastPrimaryTS.Store(ts)
		return nil
	}
	name, err := readName(br)
	if err != nil {
		return err
	}
	switch t {
	case frameLTX:
		return r.applyLTX(ctx, br, name)
	case frameSnapshot:
		return r.applySnapshot(ctx, br, name)
	case frameDrop:
		r.log.Info("database deleted on the primary", "db", name)
		return r.cfg.Store.RemoveReplicaDB(name)
	}
	return fmt.Errorf("%w: type %d", errBadFrame, t)
}

func (r *Replica) applyLTX(ctx context.Context, br *bufio.Reader, name string) error {
	var size uint64
	if err := binary.Read(br, binary.BigEndian, &size); err != nil {
		return fmt.Errorf("read ltx frame for %s: %w", name, err)
	}
	if size > 1<<40 {
		return fmt.Errorf("%w: ltx size %d", errBadFrame, size)
	}
	db, err := r.cfg.Store.CreateDB(name)
	if err != nil {
		return err
	}
	var pos sltx.Pos
	if size <= store.MaxInMemoryLTX {
		// The common case: decoded once, from memory.
		if uint64(cap(r.buf)) < size {
			r.buf = make([]byte, size)
		}
		data := r.buf[:size]
		if _, err := io.ReadFull(br, data); err != nil {
			return fmt.Errorf("receive ltx for %s: %w", name, err)
		}
		pos, err = r.cfg.Store.ApplyLTXData(ctx, name, data)
	} else {
		tmp := db.IncomingPath()
		f, ferr := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if ferr != nil {
			return ferr
		}
		_, err = io.CopyN(f, br, int64(size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("receive ltx for %s: %w", name, err)
		}
		if pos, err = r.cfg.Store.ApplyLTX(ctx, name, tmp); err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrNeedSnapshot) {
			r.log.Warn("cannot apply transaction at this position; asking for a snapshot", "db", name, "err", err)
			db.ResetPos() // the next connection gets a snapshot
		}
		return err
	}
	r.markDirty(name)
	r.log.Debug("applied", "db", name, "pos", pos)
	return nil
}

func (r *Replica) applySnapshot(ctx context.Context, br *bufio.Reader, name string) error {
	var h snapshotHeader
	if err := binary.Read(br, binary.BigEndian, &h); err != nil {
		return fmt.Errorf("read snapshot frame for %s: %w", name, err)
	}
	sp := store.SnapshotPos{TXID: h.TXID, Checksum: h.Checksum, PageSize: h.PageSize, Commit: h.Commit}
	start := time.Now()
	img, err := r.cfg.Store.ReceiveSnapshot(name, sp, br)
	if err != nil {
		return err
	}
	if err := r.cfg.Store.ApplySnapshot(ctx, name, sp, img); err != nil {
		return err
	}
	r.markDirty(name)
	r.log.Info("applied snapshot", "db", name, "txid", h.TXID, "bytes", h.size(), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

func (r *Replica) markDirty(name string) {
	r.mu.Lock()
	r.dirty[name] = true
	r.mu.Unlock()
}

// syncLoop writes the history files of applied transactions as soon as
// the stream is idle (a killed replica restarts from them), and fsyncs at
// most once per syncInterval: each fsync commits the filesystem journal,
// which stalls every file create on the disk (the primary's LTX files too,
// when they share it). It returns after a last sync once reqs is closed.
func (r *Replica) syncLoop(reqs <-chan struct{}) {
	var last time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		select {
		case _, ok := <-reqs:
			if !ok {
				r.syncDirty(true)
				return
			}
			if time.Since(last) >= syncInterval {
				r.syncDirty(true)
				last = time.Now()
			} else {
				r.syncDirty(false)
				if !armed {
					timer.Reset(syncInterval - time.Since(last))
					armed = true
				}
			}
		case <-timer.C:
			armed = false
			r.syncDirty(true)
			last = time.Now()
		}
	}
}

// syncDirty fsyncs the history and files of databases applied to since the
// last call. It runs when the stream has nothing queued, so under load many
// transactions share one fsync; a replica that crashes before it loses only
// transactions the primary still has and sends again.
func (r *Replica) syncDirty(fsync bool) {
	r.mu.Lock()
	names := maps.Clone(r.dirty)
	if fsync {
		clear(r.dirty)
	}
	r.mu.Unlock()
	for name := range names {
		db := r.cfg.Store.DB(name)
		if db == nil {
			continue
		}
		var err error
		if fsync {
			err = errors.Join(db.SyncFile(), db.SyncAppliedHistory())
		} else {
			err = db.WriteAppliedHistory()
		}
		if err != nil {
			r.log.Error("sync applied transactions", "db", name, "err", err)
		}
	}
}
