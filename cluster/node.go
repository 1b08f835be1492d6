// Package cluster runs a node's role: it asks the lease who the primary is,
// acts as the primary while it holds the lease, and otherwise follows the
// primary's replication stream.
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

// Config configures a Node.
type Config struct {
	Store          *store.Store
	Leaser         lease.Leaser
	Candidate      bool
	NodeID         string
	ReconnectDelay time.Duration
	Logger         *slog.Logger
}

// Node is this node's role in the cluster. It implements what the
// filesystem and the HTTP server ask about the role.
type Node struct {
	cfg     Config
	log     *slog.Logger
	replica *lhttp.Replica

	isPrimary atomic.Bool
	primary   atomic.Value // lease.PrimaryInfo of the current primary

	mu sync.Mutex // guards cluster ID adoption

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a node that is a replica until Start finds otherwise.
func New(cfg Config) *Node {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
	n.primary.Store(lease.PrimaryInfo{})
	n.replica = lhttp.NewReplica(lhttp.ReplicaConfig{
		Store: cfg.Store, Primary: n, Cluster: n, Hostname: cfg.Leaser.Hostname(),
		ReconnectDelay: cfg.ReconnectDelay, Logger: cfg.Logger,
	})
	return n
}

// Start decides the initial role (so the mount comes up read-only or not
// from its first request) and runs the role in the background until Close.
func (n *Node) Start(ctx context.Context) error {
	if n.cfg.Leaser.Type() != "static" {
		return fmt.Errorf("lease type %q: not supported by this node", n.cfg.Leaser.Type())
	}
	if n.cfg.Candidate {
		l, err := n.cfg.Leaser.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("acquire static lease: %w", err)
		}
		_ = l // a static lease never expires
		if n.cfg.Store.ClusterID() == "" {
			if err := n.cfg.Store.SetClusterID(store.NewClusterID()); err != nil {
				return err
			}
		}
		n.primary.Store(lease.PrimaryInfo{Hostname: n.Hostname(), AdvertiseURL: n.cfg.Leaser.AdvertiseURL()})
		n.isPrimary.Store(true)
		n.log.Info("this node is the primary", "hostname", n.Hostname(), "cluster", n.ClusterID())
		return nil
	}
	info, err := n.cfg.Leaser.PrimaryInfo(ctx)
	if err != nil {
		return fmt.Errorf("find primary: %w", err)
	}
	n.primary.Store(info)
	n.log.Info("this node is a replica", "primary", info.AdvertiseURL)
	return nil
}

// Run starts the role's background work: following the primary's stream on
// a replica. Call it once the mount is up and applies can be guarded.
func (n *Node) Run() {
	if n.IsPrimary() {
		return
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		_ = n.replica.Run(rctx)
	}()
}

// Close stops the role's background work.
func (n *Node) Close() error {
	if n.cancel != nil { // Run started a loop
		n.cancel()
		<-n.done
	}
	return nil
}

// IsPrimary reports whether this node accepts writes.
func (n *Node) IsPrimary() bool { return n.isPrimary.Load() }

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
	if h := n.replica.PrimaryHostname(); h != "" {
		return h
	}
	return n.primary.Load().(lease.PrimaryInfo).Hostname
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
	return info.AdvertiseURL, info.Hostname, info.AdvertiseURL != ""
}

// ClusterID is the cluster this node's data belongs to.
func (n *Node) ClusterID() string { return n.cfg.Store.ClusterID() }

// ErrClusterMismatch means the primary belongs to another cluster.
var ErrClusterMismatch = errors.New("primary belongs to a different cluster")

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
