package consul

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/internal/consultest"
	"github.com/replfs/litefs/lease"
)

func TestHandoff(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	// Lock-delay longer than the test's patience: every acquire below must
	// succeed because the lock was released, not because a delay ran out.
	const lockDelay = 30 * time.Second
	a := newTestLeaser(t, agent.URL(), key, "a", lockDelay)
	b := newTestLeaser(t, agent.URL(), key, "b", lockDelay)
	c := newTestLeaser(t, agent.URL(), key, "c", lockDelay)
	ctx := testContext(t)

	la := mustAcquire(t, a)
	if err := la.Handoff(ctx, "b"); err != nil {
		t.Fatalf("Handoff: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Fatalf("Renew after Handoff: %v, want ErrLeaseExpired", err)
	}
	if _, err := c.PrimaryInfo(ctx); !errors.Is(err, lease.ErrNoPrimary) {
		t.Fatalf("PrimaryInfo during handoff: %v, want ErrNoPrimary", err)
	}
	for _, l := range []*Leaser{c, a} {
		if _, err := l.Acquire(ctx); !errors.Is(err, lease.ErrPrimaryExists) {
			t.Fatalf("%s.Acquire during handoff to b: %v, want ErrPrimaryExists", l.Hostname(), err)
		}
	}

	lb := mustAcquire(t, b)
	if p, _, err := b.client.KV().Get(b.handoffKey(), nil); err != nil || p != nil {
		t.Fatalf("handoff hint after b acquired: %+v, %v; want deleted", p, err)
	}
	if info, err := c.PrimaryInfo(ctx); err != nil || info.Hostname != "b" {
		t.Fatalf("PrimaryInfo after handoff: %+v, %v; want b", info, err)
	}

	// With the hint gone, c takes over normally once b lets go.
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, c)
}

func TestHandoffHintExpires(t *testing.T) {
	agent := consultest.Start(t)
	c := newTestLeaser(t, agent.URL(), testKey(t), "c", time.Second)
	ctx := testContext(t)

	hint := func(expires time.Time) {
		v, _ := json.Marshal(handoffHint{Hostname: "b", Expires: expires.UnixMilli()})
		if _, err := c.client.KV().Put(&api.KVPair{Key: c.handoffKey(), Value: v}, nil); err != nil {
			t.Fatal(err)
		}
	}
	hint(time.Now().Add(time.Minute))
	if _, err := c.Acquire(ctx); !errors.Is(err, lease.ErrPrimaryExists) {
		t.Fatalf("Acquire with live hint for b: %v, want ErrPrimaryExists", err)
	}
	hint(time.Now().Add(-time.Second))
	mustAcquire(t, c)
	if p, _, err := c.client.KV().Get(c.handoffKey(), nil); err != nil || p != nil {
		t.Fatalf("stale hint after acquire: %+v, %v; want deleted", p, err)
	}
}

// A node that already lost the lease must not plant a hint that would hold
// back the other candidates.
func TestHandoffAfterLoss(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	a := newTestLeaser(t, agent.URL(), key, "a", time.Second)
	c := newTestLeaser(t, agent.URL(), key, "c", time.Second)
	ctx := testContext(t)

	la := mustAcquire(t, a)
	if _, err := a.client.KV().Delete(key, nil); err != nil {
		t.Fatal(err)
	}
	if err := la.Handoff(ctx, "b"); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Fatalf("Handoff after loss: %v, want ErrLeaseExpired", err)
	}
	if p, _, err := a.client.KV().Get(a.handoffKey(), nil); err != nil || p != nil {
		t.Fatalf("hint written by a lost lease: %+v, %v", p, err)
	}
	mustAcquire(t, c)
}

// A handoff that lands between a candidate reading the hint and taking the
// lock must still win: the lock is conditional on the hint read.
func TestHandoffRacesAcquire(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	a := newTestLeaser(t, agent.URL(), key, "a", time.Second)
	c := newTestLeaser(t, agent.URL(), key, "c", time.Second)
	ctx := testContext(t)

	la := mustAcquire(t, a)
	hint, blocked, err := c.readHandoff(ctx) // c sees no hint...
	if err != nil || blocked || hint != nil {
		t.Fatalf("readHandoff: %+v, %v, %v", hint, blocked, err)
	}
	if err := la.Handoff(ctx, "b"); err != nil { // ...then a hands off to b
		t.Fatal(err)
	}
	if _, err := c.lock(ctx, hint); !errors.Is(err, lease.ErrPrimaryExists) {
		t.Fatalf("lock with stale hint read: %v, want ErrPrimaryExists", err)
	}
	if ss, _, err := c.client.Session().List(nil); err != nil || len(ss) != 0 {
		t.Fatalf("sessions left after refused lock: %d, %v", len(ss), err)
	}
}
