package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/replfs/litefs/lease"
)

// promote makes this node the primary under lease l.
func (n *Node) promote(l lease.Lease) {
	n.mu.Lock()
	n.lease = l
	n.mu.Unlock()
	if n.cfg.Hooks != nil {
		n.cfg.Hooks.Promoted()
	}
	n.primary.Store(lease.PrimaryInfo{Hostname: n.Hostname(), AdvertiseURL: n.cfg.Leaser.AdvertiseURL()})
	n.writesStopped.Store(false)
	n.isPrimary.Store(true)
	n.log.Info("this node is the primary", "hostname", n.Hostname(), "cluster", n.ClusterID())
}

// demote stops writes at once, then settles the files. The lease, if still
// held, is released by the caller.
func (n *Node) demote(ctx context.Context, reason string) {
	n.isPrimary.Store(false)
	n.writesStopped.Store(false)
	n.mu.Lock()
	n.lease = nil
	n.demotedAt = time.Now()
	n.mu.Unlock()
	n.primary.Store(lease.PrimaryInfo{})
	n.log.Warn("this node is no longer the primary: writes are refused", "reason", reason)
	if n.cfg.Hooks != nil {
		n.cfg.Hooks.Demoted(ctx)
	}
}

// lead holds the lease: it renews it well before it expires, and gives it up
// when a renewal says it is lost, when Consul has been unreachable for the
// whole TTL, or when asked to hand it off.
func (n *Node) lead(ctx context.Context) {
	n.mu.Lock()
	l := n.lease
	n.mu.Unlock()
	if l == nil {
		n.isPrimary.Store(false)
		return
	}
	if n.cfg.Leaser.Type() == "static" {
		<-ctx.Done() // a static primary never changes
		return
	}
	every := l.TTL() / 5
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return // Close releases the lease
		case req := <-n.handoff:
			req.result <- n.handOff(ctx, l, req.hostname)
			if !n.IsPrimary() {
				return
			}
		case <-t.C:
			rctx, cancel := context.WithDeadline(ctx, lease.ValidUntil(l))
			err := l.Renew(rctx)
			cancel()
			switch {
			case err == nil:
			case errors.Is(err, lease.ErrLeaseExpired):
				n.demote(ctx, "lease lost")
				return
			case time.Now().After(lease.ValidUntil(l)):
				n.demote(ctx, "lease could not be renewed before it expired: "+err.Error())
				_ = l.Close()
				return
			default:
				n.log.Warn("lease renewal failed; retrying while the lease is still valid",
					"err", err, "valid_for", time.Until(lease.ValidUntil(l)).Round(time.Millisecond))
			}
		}
	}
}

// handOff gives the lease to hostname; writes were stopped by StopWrites.
func (n *Node) handOff(ctx context.Context, l lease.Lease, hostname string) error {
	if err := l.Handoff(ctx, hostname); err != nil {
		return err
	}
	n.demote(ctx, "handed off to "+hostname)
	return nil
}

// follow replicates from whoever holds the lease and, as a candidate, takes
// the lease when nobody holds it. It returns once this node is primary or
// ctx is done.
func (n *Node) follow(ctx context.Context) {
	var (
		streamCancel context.CancelFunc
		streamDone   chan struct{}
		following    lease.PrimaryInfo
		noPrimary    time.Time // since when no primary is known
		lastErr      string
	)
	stopStream := func() {
		if streamCancel != nil {
			streamCancel()
			<-streamDone
			streamCancel = nil
		}
	}
	defer stopStream()
	t := time.NewTicker(n.cfg.PollInterval)
	defer t.Stop()
	for {
		info, err := n.cfg.Leaser.PrimaryInfo(ctx)
		switch {
		case err == nil:
			noPrimary, lastErr = time.Time{}, ""
			if info != following {
				stopStream()
				following = info
				n.primary.Store(info)
				if info.Hostname != n.Hostname() {
					n.log.Info("following primary", "hostname", info.Hostname, "url", info.AdvertiseURL)
					sctx, cancel := context.WithCancel(ctx)
					streamCancel, streamDone = cancel, make(chan struct{})
					go func() { defer close(streamDone); _ = n.replica.Run(sctx) }()
				}
			}
		case errors.Is(err, lease.ErrNoPrimary):
			if noPrimary.IsZero() {
				noPrimary = time.Now()
				n.log.Info("no primary holds the lease")
			}
			n.primary.Store(lease.PrimaryInfo{})
			if n.tryAcquire(ctx, noPrimary) {
				stopStream()
				return
			}
		default:
			// The lease service is unreachable: keep following whoever we
			// follow and keep serving reads.
			if msg := err.Error(); msg != lastErr {
				n.log.Warn("cannot read the lease; still following the last known primary", "err", err)
				lastErr = msg
			}
		}
		select {
		case <-ctx.Done():
			return
		case req := <-n.handoff:
			req.result <- errors.New("not the primary")
		case <-t.C:
		}
	}
}

// tryAcquire takes the free lease if this node may: it is a candidate, it
// did not just give the lease up, and it is not known to be missing
// transactions of the last primary (or that primary has been gone for a
// whole TTL, so waiting longer would only keep the cluster without one).
func (n *Node) tryAcquire(ctx context.Context, noPrimarySince time.Time) bool {
	if !n.cfg.Candidate {
		return false
	}
	n.mu.Lock()
	demotedAt := n.demotedAt
	n.mu.Unlock()
	if time.Since(demotedAt) < n.cfg.DemoteDelay {
		return false
	}
	if !n.replica.CaughtUp() && time.Since(noPrimarySince) < n.catchUpGrace() {
		return false
	}
	l, err := n.cfg.Leaser.Acquire(ctx)
	if err != nil {
		if !errors.Is(err, lease.ErrPrimaryExists) {
			n.log.Warn("acquire lease", "err", err)
		}
		return false
	}
	n.promote(l)
	return true
}

// catchUpGrace is how long a candidate that may be behind waits for a
// current candidate to take the lease.
func (n *Node) catchUpGrace() time.Duration { return 10 * time.Second }

// Handoff asks this primary to hand the lease to hostname. Writes stop
// first; the caller (the HTTP handler) has already waited for hostname to
// catch up.
func (n *Node) Handoff(ctx context.Context, hostname string) error {
	if !n.IsPrimary() {
		return errors.New("not the primary")
	}
	req := handoffReq{hostname: hostname, result: make(chan error, 1)}
	select {
	case n.handoff <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StopWrites makes the primary refuse writes ahead of a handoff while it
// still holds the lease and streams, so the new primary can catch up.
func (n *Node) StopWrites() { n.writesStopped.Store(true) }

// ResumeWrites undoes StopWrites after a handoff that did not happen.
func (n *Node) ResumeWrites() { n.writesStopped.Store(false) }
