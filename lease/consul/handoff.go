package consul

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/lease"
)

// handoffTTL is how long a handoff hint holds other candidates back. It only
// needs to cover the target noticing the free lock and acquiring it; if the
// target is dead the cluster is without a primary for at most this long.
const handoffTTL = 5 * time.Second

// handoffHint is stored at <Key>-handoff by a primary stepping down in favour
// of a named node. Expires is unix milliseconds on the writer's clock, so it
// tolerates clock skew only up to a fraction of handoffTTL.
type handoffHint struct {
	Hostname string `json:"hostname"`
	Expires  int64  `json:"expires"`
}

func (l *Leaser) handoffKey() string { return l.cfg.Key + "-handoff" }

// readHandoff reads the hint. blocked is true while an unexpired hint names
// another node, so candidates do not race the node the lease was handed to.
// The returned pair (nil if absent) feeds handoffGuard.
func (l *Leaser) readHandoff(ctx context.Context) (p *api.KVPair, blocked bool, err error) {
	p, _, err = l.client.KV().Get(l.handoffKey(), qopts(ctx))
	if err != nil || p == nil {
		return p, false, err
	}
	var h handoffHint
	if err := json.Unmarshal(p.Value, &h); err != nil {
		// A garbled hint must not block elections forever; the next
		// acquirer deletes it.
		l.log.Warn("ignoring undecodable handoff hint", "value", string(p.Value), "err", err)
		return p, false, nil
	}
	return p, h.Hostname != l.cfg.Hostname && time.Now().Before(time.UnixMilli(h.Expires)), nil
}

// handoffGuard is the transaction op that makes an acquire depend on the
// hint being exactly as readHandoff saw it: absent, or unchanged, in which
// case it is deleted (it is obsolete once somebody holds the lease). Without
// it a handoff landing between our read and our lock could be overridden.
func (l *Leaser) handoffGuard(p *api.KVPair) *api.TxnOp {
	if p == nil {
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: l.handoffKey()}}
	}
	return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: l.handoffKey(), Index: p.ModifyIndex}}
}

// handoff atomically (in one Consul transaction) checks that session still
// holds the lock, writes the hint naming hostname and releases the lock.
// Doing it in one step means a node that already lost the lease cannot block
// the rightful holder's successors with a stale hint.
func (l *Leaser) handoff(ctx context.Context, session, hostname string) error {
	hint, err := json.Marshal(handoffHint{Hostname: hostname, Expires: time.Now().Add(handoffTTL).UnixMilli()})
	if err != nil {
		return fmt.Errorf("consul handoff %s: %w", l.cfg.Key, err)
	}
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: l.cfg.Key, Session: session}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: l.handoffKey(), Value: hint}},
		{KV: &api.KVTxnOp{Verb: api.KVUnlock, Key: l.cfg.Key, Session: session}},
	}
	ok, resp, _, err := l.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul handoff %s to %s: %w", l.cfg.Key, hostname, err)
	}
	if !ok {
		l.log.Warn("handoff refused, lease already lost", "errors", txnErrors(resp))
		return lease.ErrLeaseExpired
	}
	l.log.Info("lease handed off", "to", hostname)
	return nil
}

// txnErrors flattens a transaction's per-op errors for logging.
func txnErrors(resp *api.TxnResponse) []string {
	if resp == nil {
		return nil
	}
	var out []string
	for _, e := range resp.Errors {
		out = append(out, fmt.Sprintf("op %d: %s", e.OpIndex, e.What))
	}
	return out
}
