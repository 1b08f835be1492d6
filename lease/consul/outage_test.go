package consul

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/replfs/litefs/internal/consultest"
	"github.com/replfs/litefs/lease"
)

// TestConsulOutage stops the agent under a held lease: Renew must fail
// (not hang), and once Consul is back the old lease is gone and the lease
// can be acquired afresh.
func TestConsulOutage(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	a := newTestLeaser(t, agent.URL(), key, "a", time.Second)
	la := mustAcquire(t, a)

	agent.Stop()
	// No deadline on the context: the client's own timeouts must end it.
	errc := make(chan error, 1)
	go func() { errc <- la.Renew(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Renew succeeded with Consul stopped")
		}
		if errors.Is(err, lease.ErrLeaseExpired) {
			t.Fatalf("Renew with Consul down claimed the lease expired: %v", err)
		}
		t.Logf("Renew with Consul down: %v", err)
	case <-time.After(requestTimeout + 5*time.Second):
		t.Fatal("Renew hung with Consul stopped")
	}
	if _, err := a.Acquire(testContext(t)); err == nil {
		t.Fatal("Acquire succeeded with Consul stopped")
	}

	agent.Restart(t)
	ctx := testContext(t)
	// A dev agent restarts empty, so the old session is gone.
	if err := la.Renew(ctx); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Fatalf("Renew after restart: %v, want ErrLeaseExpired", err)
	}
	mustAcquire(t, a)
	if info, err := a.PrimaryInfo(ctx); err != nil || info.Hostname != "a" {
		t.Fatalf("PrimaryInfo after restart: %+v, %v", info, err)
	}
}

// TestCancelledContext checks calls honour ctx instead of doing the request.
func TestCancelledContext(t *testing.T) {
	agent := consultest.Start(t)
	a := newTestLeaser(t, agent.URL(), testKey(t), "a", time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with cancelled ctx: %v, want context.Canceled", err)
	}
	if _, err := a.PrimaryInfo(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("PrimaryInfo with cancelled ctx: %v, want context.Canceled", err)
	}
}
