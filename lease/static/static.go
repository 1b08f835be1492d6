// Package static is a Leaser whose primary is fixed by configuration: the
// candidate node always holds the lease, the others always follow it.
package static

import (
	"context"
	"sync"
	"time"

	"github.com/replfs/litefs/lease"
)

// Leaser is a static lease.
type Leaser struct {
	candidate    bool
	hostname     string
	advertiseURL string
	primary      lease.PrimaryInfo

	mu        sync.Mutex
	clusterID string
}

var _ lease.Leaser = (*Leaser)(nil)

// New returns a static leaser. On the primary (candidate) primaryURL is its
// own advertise URL; on replicas it is the URL of the fixed primary.
func New(candidate bool, hostname, advertiseURL, primaryHostname, primaryURL string) *Leaser {
	l := &Leaser{candidate: candidate, hostname: hostname, advertiseURL: advertiseURL}
	if candidate {
		l.primary = lease.PrimaryInfo{Hostname: hostname, AdvertiseURL: advertiseURL}
	} else {
		l.primary = lease.PrimaryInfo{Hostname: primaryHostname, AdvertiseURL: primaryURL}
	}
	return l
}

func (l *Leaser) Type() string         { return "static" }
func (l *Leaser) Hostname() string     { return l.hostname }
func (l *Leaser) AdvertiseURL() string { return l.advertiseURL }
func (l *Leaser) Close() error         { return nil }

// Acquire succeeds only on the configured primary.
func (l *Leaser) Acquire(ctx context.Context) (lease.Lease, error) {
	if !l.candidate {
		return nil, lease.ErrPrimaryExists
	}
	return &staticLease{renewed: time.Now()}, nil
}

// PrimaryInfo is the configured primary.
func (l *Leaser) PrimaryInfo(ctx context.Context) (lease.PrimaryInfo, error) {
	return l.primary, nil
}

// ClusterID is kept in memory: a static cluster has no shared store, so the
// primary's data directory is the authority (see the stream handshake).
func (l *Leaser) ClusterID(ctx context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clusterID, nil
}

func (l *Leaser) SetClusterID(ctx context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clusterID != "" && l.clusterID != id {
		return lease.ErrClusterIDMismatch
	}
	l.clusterID = id
	return nil
}

// staticLease never expires.
type staticLease struct{ renewed time.Time }

func (s *staticLease) RenewedAt() time.Time                        { return s.renewed }
func (s *staticLease) TTL() time.Duration                          { return 100 * 365 * 24 * time.Hour }
func (s *staticLease) Renew(ctx context.Context) error             { s.renewed = time.Now(); return nil }
func (s *staticLease) Handoff(ctx context.Context, _ string) error { return lease.ErrPrimaryExists }
func (s *staticLease) Close() error                                { return nil }
