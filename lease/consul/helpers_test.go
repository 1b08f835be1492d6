package consul

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/replfs/litefs/lease"
)

// newTestLeaser builds an opened Leaser for hostname on key. Tests use a key
// per test so they can share one agent.
func newTestLeaser(t *testing.T, url, key, hostname string, lockDelay time.Duration) *Leaser {
	t.Helper()
	l, err := New(Config{
		URL:          url,
		Key:          key,
		LockDelay:    lockDelay,
		Hostname:     hostname,
		AdvertiseURL: "http://" + hostname + ":20202",
	})
	if err != nil {
		t.Fatalf("New(%s): %v", hostname, err)
	}
	if err := l.Open(testContext(t)); err != nil {
		t.Fatalf("Open(%s): %v", hostname, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// testKey derives a KV key unique to the running (sub)test.
func testKey(t *testing.T) string {
	return "litefs-test/" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
}

// testContext bounds a test's Consul calls so a bug hangs no longer than this.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustAcquire acquires or fails the test, closing the lease at the end.
func mustAcquire(t *testing.T, l *Leaser) *consulLease {
	t.Helper()
	ls, err := l.Acquire(testContext(t))
	if err != nil {
		t.Fatalf("Acquire(%s): %v", l.Hostname(), err)
	}
	t.Cleanup(func() { ls.Close() })
	return ls.(*consulLease)
}

// acquireWithin retries Acquire while it returns ErrPrimaryExists.
func acquireWithin(t *testing.T, l *Leaser, limit time.Duration) lease.Lease {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ls, err := l.Acquire(testContext(t))
		if err == nil {
			t.Cleanup(func() { ls.Close() })
			return ls
		}
		if !errors.Is(err, lease.ErrPrimaryExists) || time.Now().After(deadline) {
			t.Fatalf("Acquire(%s) after %s: %v", l.Hostname(), limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
