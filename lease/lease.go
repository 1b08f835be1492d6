// Package lease decides which node is the primary. A Leaser is asked for the
// lease by candidates; the holder renews it and everyone else reads who holds
// it to know where to replicate from. Implementations: static (fixed by
// config) and consul (a Consul session lock).
package lease

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrPrimaryExists means another node holds the lease.
	ErrPrimaryExists = errors.New("primary exists")
	// ErrNoPrimary means nobody holds the lease right now.
	ErrNoPrimary = errors.New("no primary")
	// ErrLeaseExpired means a held lease was lost (expired, deleted or taken).
	ErrLeaseExpired = errors.New("lease expired")
	// ErrClusterIDMismatch means the lease store belongs to another cluster.
	ErrClusterIDMismatch = errors.New("cluster id mismatch")
)

// PrimaryInfo is what the lease holder advertises to the other nodes.
type PrimaryInfo struct {
	Hostname     string `json:"hostname"`
	AdvertiseURL string `json:"advertise-url"`
}

// Leaser hands out the primary lease. Methods that talk to a remote service
// take a context and must return promptly when it is cancelled.
type Leaser interface {
	// Type is "static" or "consul".
	Type() string
	// Hostname and AdvertiseURL describe this node.
	Hostname() string
	AdvertiseURL() string

	// Acquire tries once to take the lease. It returns ErrPrimaryExists when
	// another node holds it.
	Acquire(ctx context.Context) (Lease, error)
	// PrimaryInfo returns the current holder, or ErrNoPrimary.
	PrimaryInfo(ctx context.Context) (PrimaryInfo, error)

	// ClusterID returns the cluster ID recorded with the lease, "" if none.
	ClusterID(ctx context.Context) (string, error)
	// SetClusterID records id if no cluster ID is recorded yet and returns
	// ErrClusterIDMismatch if a different one is.
	SetClusterID(ctx context.Context, id string) error

	Close() error
}

// Lease is a held primary lease.
type Lease interface {
	// RenewedAt is when the lease was last acquired or renewed, and TTL how
	// long after that it stays valid without a renewal. The holder must stop
	// acting as primary once RenewedAt+TTL has passed.
	RenewedAt() time.Time
	TTL() time.Duration
	// Renew extends the lease; ErrLeaseExpired if it was lost.
	Renew(ctx context.Context) error
	// Handoff asks that the node with the given hostname gets the lease
	// next: the lease is released and other candidates hold back briefly.
	Handoff(ctx context.Context, hostname string) error
	// Close releases the lease so another candidate can take it at once.
	Close() error
}

// ValidUntil is the moment a lease stops being valid without a renewal.
func ValidUntil(l Lease) time.Time { return l.RenewedAt().Add(l.TTL()) }
