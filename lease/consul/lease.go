package consul

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/lease"
)

// consulLease is a held session lock. Methods are safe for concurrent use.
type consulLease struct {
	leaser  *Leaser
	session string

	mu        sync.Mutex
	renewedAt time.Time
	done      bool // closed, handed off or found expired
}

var _ lease.Lease = (*consulLease)(nil)

func (c *consulLease) RenewedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.renewedAt
}

func (c *consulLease) TTL() time.Duration { return c.leaser.cfg.TTL }

// Renew resets the session TTL and checks the key is still ours: a session
// can outlive its lock if the key was deleted or released out of band.
func (c *consulLease) Renew(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return lease.ErrLeaseExpired
	}
	l := c.leaser
	// Taken before the request: Consul restarts its TTL clock when it
	// handles the renewal, which is never earlier than this.
	start := time.Now()
	entry, _, err := l.client.Session().Renew(c.session, wopts(ctx))
	if err != nil {
		return fmt.Errorf("consul renew %s: %w", l.cfg.Key, err)
	}
	if entry == nil {
		c.done = true
		l.log.Warn("lease lost: session gone", "session", c.session)
		return lease.ErrLeaseExpired
	}
	held, err := keyHeld(ctx, l.client.KV(), l.cfg.Key, c.session)
	if err != nil {
		return fmt.Errorf("consul renew %s: check lock: %w", l.cfg.Key, err)
	}
	if !held {
		c.done = true
		l.log.Warn("lease lost: key not held by our session", "session", c.session)
		l.destroySession(c.session)
		return lease.ErrLeaseExpired
	}
	c.renewedAt = start
	return nil
}

// Handoff releases the lock while leaving a hint that hostname should take
// it next, then destroys the session.
func (c *consulLease) Handoff(ctx context.Context, hostname string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return lease.ErrLeaseExpired
	}
	if hostname == "" {
		return errors.New("consul handoff: hostname required")
	}
	herr := c.leaser.handoff(ctx, c.session, hostname)
	if herr != nil && !errors.Is(herr, lease.ErrLeaseExpired) {
		// Consul unreachable or the like: we may still hold the lock, so
		// keep the lease usable and let the caller decide.
		return herr
	}
	c.done = true
	derr := c.leaser.destroySession(c.session)
	if herr != nil {
		return herr
	}
	return derr
}

// Close releases the lock, so a successor can acquire without waiting out
// the lock-delay, and destroys the session. Closing twice is a no-op.
func (c *consulLease) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	c.done = true
	l := c.leaser
	ctx, cancel := cleanupContext()
	defer cancel()
	// Release before destroy: destroying a session that still holds the
	// lock would apply the lock-delay (and, with Behavior "delete", remove
	// the key) instead of freeing it at once.
	var rerr error
	if _, _, err := l.client.KV().Release(&api.KVPair{Key: l.cfg.Key, Session: c.session}, wopts(ctx)); err != nil {
		rerr = fmt.Errorf("consul release %s: %w", l.cfg.Key, err)
	}
	derr := l.destroySession(c.session)
	if rerr == nil && derr == nil {
		l.log.Info("lease released", "session", c.session)
	}
	return errors.Join(rerr, derr)
}
