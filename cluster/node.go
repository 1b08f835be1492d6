// Package cluster runs a node's role: it asks the lease who the primary is,
// acts as the primary while it holds the lease, and otherwise follows the
// primary's replication stream, taking the lease when it is free and this
// node is a candidate whose data is current.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lhttp "github.com/replfs/litefs/http"
	"github.com/replfs/litefs/lease"
	"github.com/replfs/litefs/store"
)

// Hooks are what a role change must do to the rest of the node.
type Hooks interface {
	// Promoted runs before the node starts accepting writes: the capture
	// layer forgets state from any earlier time as primary.
	Promoted()
	// Demoted runs after the node stopped accepting writes: files are
	// brought back to exactly the recorded positions (interrupted
	// transactions rolled back, WAL checkpointed) so applies can follow.
	Demoted(ctx context.Context)
}

// Config configures a Node.
type Config struct {
	Store     *store.Store
	Leaser    lease.Leaser
	Candidate bool
	NodeID    string
	// ReconnectDelay is the wait between attempts to reach the lease or the
	// primary; DemoteDelay is how long a node that gave up the lease waits
	// before competing for it again.
	ReconnectDelay time.Duration
	DemoteDelay    time.Duration
	// PollInterval is how often a replica checks who holds the lease.
	PollInterval time.Duration
	Hooks        Hooks
	Logger       *slog.Logger
}

// Node is this node's role in the cluster. It implements what the
// filesystem and the HTTP server ask about the role.
type Node struct {
	cfg     Config
	log     *slog.Logger
	replica *lhttp.Replica

	isPrimary     atomic.Bool  // holds the lease
	writesStopped atomic.Bool  // a handoff is under way: writes are refused
	primary       atomic.Value // lease.PrimaryInfo of the current primary

	mu        sync.Mutex // guards lease, handoff and cluster ID adoption
	lease     lease.Lease
	handoff   chan handoffReq
	demotedAt time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

type handoffReq struct {
	hostname string
	result   chan error
}

// New returns a node that is a replica until Start finds otherwise.
func New(cfg Config) *Node {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconnectDelay <= 0 {
		cfg.ReconnectDelay = time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	n := &Node{cfg: cfg, log: cfg.Logger, done: make(chan struct{}), handoff: make(chan handoffReq)}
	n.primary.Store(lease.PrimaryInfo{})
	n.replica = lhttp.NewReplica(lhttp.ReplicaConfig{
		Store: cfg.Store, Primary: n, Cluster: n, Hostname: cfg.Leaser.Hostname(),
		ReconnectDelay: cfg.ReconnectDelay, Logger: cfg.Logger,
	})
	return n
}

// Start joins the cluster (checking its cluster ID) and decides the initial
// role, so the mount comes up read-only or writable from its first request.
// A candidate that finds the lease free takes it here.
func (n *Node) Start(ctx context.Context) error {
	if err := n.joinCluster(ctx); err != nil {
		return err
	}
	if n.cfg.Candidate {
		l, err := n.cfg.Leaser.Acquire(ctx)
		switch {
		case err == nil:
			n.promote(l)
			return nil
		case n.cfg.Leaser.Type() == "static":
			return fmt.Errorf("acquire static lease: %w", err)
		case !errors.Is(err, lease.ErrPrimaryExists):
			n.log.Warn("cannot reach the lease yet; starting as a replica", "err", err)
		}
	}
	if info, err := n.cfg.Leaser.PrimaryInfo(ctx); err == nil {
		n.primary.Store(info)
		n.log.Info("this node is a replica", "primary", info.Hostname, "url", info.AdvertiseURL)
	} else {
		n.log.Info("this node is a replica; no primary yet", "reason", err)
	}
	return nil
}

// joinCluster reconciles this node's cluster ID with the one recorded with
// the lease: a node never joins a cluster its data does not belong to.
func (n *Node) joinCluster(ctx context.Context) error {
	local := n.cfg.Store.ClusterID()
	remote, err := n.cfg.Leaser.ClusterID(ctx)
	if err != nil {
		return fmt.Errorf("read cluster id: %w", err)
	}
	switch {
	case remote != "" && local != "" && remote != local:
		return fmt.Errorf("%w: the lease belongs to cluster %s, this node's data to cluster %s", ErrClusterMismatch, remote, local)
	case remote != "" && local == "":
		n.log.Info("joining cluster", "cluster", remote)
		return n.cfg.Store.SetClusterID(remote)
	case remote == "" && n.cfg.Leaser.Type() == "static":
		if local == "" && n.cfg.Candidate {
			local = store.NewClusterID()
			if err := n.cfg.Store.SetClusterID(local); err != nil {
				return err
			}
		}
		if local != "" {
			return n.cfg.Leaser.SetClusterID(ctx, local)
		}
		return nil // a static replica learns it from the primary's stream
	case remote == "":
		if local == "" {
			local = store.NewClusterID()
		}
		if err := n.cfg.Leaser.SetClusterID(ctx, local); errors.Is(err, lease.ErrClusterIDMismatch) {
			return n.joinCluster(ctx) // another node won the race: take its ID
		} else if err != nil {
			return fmt.Errorf("record cluster id: %w", err)
		}
		return n.cfg.Store.SetClusterID(local)
	}
	return nil
}

// Run drives the role in the background until Close. Call it once the
// mount is up and applies can be guarded.
func (n *Node) Run() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		for ctx.Err() == nil {
			if n.IsPrimary() {
				n.lead(ctx)
			} else {
				n.follow(ctx)
			}
		}
	}()
}

// Close stops the role. A primary releases its lease, so another candidate
// takes over at once instead of after the session expires.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	n.mu.Lock()
	l := n.lease
	n.lease = nil
	n.mu.Unlock()
	if l != nil {
		n.isPrimary.Store(false)
		if err := l.Close(); err != nil {
			return fmt.Errorf("release lease: %w", err)
		}
		n.log.Info("lease released")
	}
	return nil
}

// IsPrimary reports whether this node holds the lease: it streams to
// replicas and, unless a handoff is under way, accepts writes.
func (n *Node) IsPrimary() bool { return n.isPrimary.Load() }

// Writable reports whether this node accepts writes.
func (n *Node) Writable() bool { return n.isPrimary.Load() && !n.writesStopped.Load() }

// Candidate reports whether this node may become the primary.
func (n *Node) Candidate() bool { return n.cfg.Candidate }

// Hostname is this node's hostname.
func (n *Node) Hostname() string { return n.cfg.Leaser.Hostname() }

// NodeID identifies this node.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// PrimaryHostname is the primary's hostname; "" on the primary itself.
func (n *Node) PrimaryHostname() string {
	if n.IsPrimary() {
		return ""
	}
	if h := n.primary.Load().(lease.PrimaryInfo).Hostname; h != "" {
		return h
	}
	return n.replica.PrimaryHostname()
}

// Lag is the replication lag; on the primary it is zero.
func (n *Node) Lag() (time.Duration, bool) {
	if n.IsPrimary() {
		return 0, true
	}
	return n.replica.Lag()
}

// PrimaryURL implements lhttp.PrimaryFinder.
func (n *Node) PrimaryURL(ctx context.Context) (string, string, bool) {
	if n.IsPrimary() {
		return "", "", false
	}
	info := n.primary.Load().(lease.PrimaryInfo)
	if info.Hostname == n.Hostname() {
		return "", "", false // our own stale lease: never stream from ourselves
	}
	return info.AdvertiseURL, info.Hostname, info.AdvertiseURL != ""
}

// ClusterID is the cluster this node's data belongs to.
func (n *Node) ClusterID() string { return n.cfg.Store.ClusterID() }

// ErrClusterMismatch means a node and its cluster disagree on the cluster ID.
var ErrClusterMismatch = errors.New("cluster id mismatch")

// AdoptClusterID implements lhttp.ClusterIDs: a replica without a cluster ID
// joins the primary's cluster; one with another ID refuses to.
func (n *Node) AdoptClusterID(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	cur := n.cfg.Store.ClusterID()
	switch {
	case id == "":
		return errors.New("primary sent no cluster id")
	case cur == id:
		return nil
	case cur != "":
		return fmt.Errorf("%w: primary is in cluster %s, this node's data is in cluster %s (remove %s to join)",
			ErrClusterMismatch, id, cur, "data.dir/clusterid")
	}
	n.log.Info("joining cluster", "cluster", id)
	return n.cfg.Store.SetClusterID(id)
}
