// Package consul is a primary lease held as a Consul session lock.
//
// A candidate creates a TTL session and acquires a KV key with it; the key's
// value advertises the holder (lease.PrimaryInfo). The holder renews the
// session; if it stops, Consul invalidates the session and deletes the key,
// and after the session's lock-delay another candidate may acquire it. An
// explicit Close releases the key first, so no lock-delay applies and a
// successor can take over at once.
package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/lease"
)

// Defaults for Config. Consul refuses session TTLs under 10s.
const (
	DefaultKey       = "litefs/primary"
	DefaultTTL       = 10 * time.Second
	DefaultLockDelay = 1 * time.Second

	minTTL       = 10 * time.Second
	maxTTL       = 24 * time.Hour // Consul's session_ttl_max default
	maxLockDelay = 60 * time.Second
)

// Config configures a Leaser. Zero values take the defaults above.
type Config struct {
	URL          string        // Consul HTTP API, e.g. http://127.0.0.1:8500
	Key          string        // KV key of the lock
	TTL          time.Duration // session TTL
	LockDelay    time.Duration // session lock-delay after an expiry
	Hostname     string        // this node
	AdvertiseURL string        // this node's API URL
	Logger       *slog.Logger
}

// Leaser hands out the primary lease through Consul.
type Leaser struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger
}

var _ lease.Leaser = (*Leaser)(nil)

// New validates cfg and builds a Leaser. It does not contact Consul, so it
// can be used while Consul is still starting; call Open to check the URL.
func New(cfg Config) (*Leaser, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("consul lease config: %w", err)
	}
	client, err := newClient(cfg.URL)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("lease", "consul", "key", cfg.Key)
	return &Leaser{cfg: cfg, client: client, log: log}, nil
}

// setDefaults fills zero values and rejects what Consul would refuse later,
// so a bad config fails at startup rather than at the first election.
func (c *Config) setDefaults() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url %q: %w", c.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: want http://host:port or https://host:port", c.URL)
	}
	c.Key = strings.Trim(c.Key, "/")
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < minTTL || c.TTL > maxTTL {
		return fmt.Errorf("ttl %s: must be between %s and %s", c.TTL, minTTL, maxTTL)
	}
	if c.TTL%time.Second != 0 {
		// Consul keeps TTLs in whole seconds; a fraction would make our
		// local validity outlive Consul's.
		return fmt.Errorf("ttl %s: must be whole seconds", c.TTL)
	}
	if c.LockDelay == 0 {
		c.LockDelay = DefaultLockDelay
	}
	if c.LockDelay < 0 || c.LockDelay > maxLockDelay {
		return fmt.Errorf("lock-delay %s: must be between 0 and %s", c.LockDelay, maxLockDelay)
	}
	if c.Hostname == "" {
		return errors.New("hostname required")
	}
	if c.AdvertiseURL == "" {
		return errors.New("advertise-url required")
	}
	return nil
}

// Open checks once that the URL reaches a Consul cluster with a leader. It
// is meant for startup, so a typo in the URL is reported plainly instead of
// as an endless series of failed elections.
func (l *Leaser) Open(ctx context.Context) error {
	leader, err := l.client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul open %s (is the Consul HTTP API there?): %w", l.cfg.URL, err)
	}
	if leader == "" {
		return fmt.Errorf("consul open %s: cluster has no leader", l.cfg.URL)
	}
	l.log.Debug("consul reachable", "url", l.cfg.URL, "leader", leader)
	return nil
}

func (l *Leaser) Type() string         { return "consul" }
func (l *Leaser) Hostname() string     { return l.cfg.Hostname }
func (l *Leaser) AdvertiseURL() string { return l.cfg.AdvertiseURL }

// Close is a no-op: the Leaser holds nothing beyond the leases it handed
// out, and those are closed by their holders.
func (l *Leaser) Close() error { return nil }

// Acquire tries once to take the lease. The lock and the handoff-hint check
// happen in one Consul transaction, so a concurrent handoff is honoured.
func (l *Leaser) Acquire(ctx context.Context) (lease.Lease, error) {
	hint, blocked, err := l.readHandoff(ctx)
	if err != nil {
		return nil, fmt.Errorf("consul acquire %s: read handoff hint: %w", l.cfg.Key, err)
	}
	if blocked {
		return nil, lease.ErrPrimaryExists
	}
	return l.lock(ctx, hint)
}

// lock creates a session and takes the lock with it, provided the handoff
// hint is still as read (see handoffGuard).
func (l *Leaser) lock(ctx context.Context, hint *api.KVPair) (lease.Lease, error) {
	value, err := json.Marshal(lease.PrimaryInfo{Hostname: l.cfg.Hostname, AdvertiseURL: l.cfg.AdvertiseURL})
	if err != nil {
		return nil, fmt.Errorf("consul acquire %s: %w", l.cfg.Key, err)
	}

	// Taken before the session exists so our notion of validity starts no
	// later than Consul's TTL clock does.
	start := time.Now()
	// No health checks: the lease lives exactly as long as the holder keeps
	// renewing it, not as long as whichever Consul agent we talk to is up.
	id, _, err := l.client.Session().CreateNoChecks(&api.SessionEntry{
		Name:      "litefs-" + l.cfg.Hostname,
		Behavior:  api.SessionBehaviorDelete,
		TTL:       l.cfg.TTL.String(),
		LockDelay: l.cfg.LockDelay,
	}, wopts(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul acquire %s: create session: %w", l.cfg.Key, err)
	}

	ops := api.TxnOps{
		l.handoffGuard(hint),
		{KV: &api.KVTxnOp{Verb: api.KVLock, Key: l.cfg.Key, Value: value, Session: id}},
	}
	ok, resp, _, err := l.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || !ok {
		// Also on error: the lock may have landed, and destroying the
		// session undoes it rather than leaving an orphan lock.
		l.destroySession(id)
		if err != nil {
			return nil, fmt.Errorf("consul acquire %s: %w", l.cfg.Key, err)
		}
		// Held by another session, inside its lock-delay, or the hint
		// changed under us: in every case someone else is (about to be)
		// primary.
		l.log.Debug("acquire refused", "errors", txnErrors(resp))
		return nil, lease.ErrPrimaryExists
	}

	l.log.Info("lease acquired", "session", id, "hostname", l.cfg.Hostname)
	return &consulLease{leaser: l, session: id, renewedAt: start}, nil
}

// PrimaryInfo returns the holder advertised in the lock key.
func (l *Leaser) PrimaryInfo(ctx context.Context) (lease.PrimaryInfo, error) {
	p, _, err := l.client.KV().Get(l.cfg.Key, qopts(ctx))
	if err != nil {
		return lease.PrimaryInfo{}, fmt.Errorf("consul primary info %s: %w", l.cfg.Key, err)
	}
	// A released key keeps its value; only a key with a session is held.
	if p == nil || p.Session == "" {
		return lease.PrimaryInfo{}, lease.ErrNoPrimary
	}
	var info lease.PrimaryInfo
	if err := json.Unmarshal(p.Value, &info); err != nil {
		return lease.PrimaryInfo{}, fmt.Errorf("consul primary info %s: decode %q: %w", l.cfg.Key, p.Value, err)
	}
	return info, nil
}

// destroySession removes a session we no longer want. It runs on its own
// bounded context because it is often reached after the caller's context
// failed, and a leftover session would keep a lock alive until its TTL.
func (l *Leaser) destroySession(id string) error {
	ctx, cancel := cleanupContext()
	defer cancel()
	if _, err := l.client.Session().Destroy(id, wopts(ctx)); err != nil {
		l.log.Warn("destroy session", "session", id, "err", err)
		return fmt.Errorf("consul destroy session %s: %w", id, err)
	}
	return nil
}
