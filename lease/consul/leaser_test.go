package consul

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/replfs/litefs/internal/consultest"
	"github.com/replfs/litefs/lease"
)

func TestAcquireRenewClose(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	a := newTestLeaser(t, agent.URL(), key, "a", time.Second)
	ctx := testContext(t)

	if _, err := a.PrimaryInfo(ctx); !errors.Is(err, lease.ErrNoPrimary) {
		t.Fatalf("PrimaryInfo before acquire: %v, want ErrNoPrimary", err)
	}

	before := time.Now()
	ls := mustAcquire(t, a)
	if ls.TTL() != DefaultTTL {
		t.Fatalf("TTL %s, want %s", ls.TTL(), DefaultTTL)
	}
	if ls.RenewedAt().Before(before) || ls.RenewedAt().After(time.Now()) {
		t.Fatalf("RenewedAt %s not within acquire", ls.RenewedAt())
	}

	info, err := a.PrimaryInfo(ctx)
	if err != nil {
		t.Fatalf("PrimaryInfo: %v", err)
	}
	if want := (lease.PrimaryInfo{Hostname: "a", AdvertiseURL: "http://a:20202"}); info != want {
		t.Fatalf("PrimaryInfo %+v, want %+v", info, want)
	}

	first := ls.RenewedAt()
	time.Sleep(10 * time.Millisecond)
	if err := ls.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !ls.RenewedAt().After(first) {
		t.Fatalf("RenewedAt not advanced by Renew: %s then %s", first, ls.RenewedAt())
	}

	if err := ls.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ls.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := ls.Renew(ctx); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Fatalf("Renew after Close: %v, want ErrLeaseExpired", err)
	}
	// The released key keeps its value but has no session: no primary.
	if _, err := a.PrimaryInfo(ctx); !errors.Is(err, lease.ErrNoPrimary) {
		t.Fatalf("PrimaryInfo after Close: %v, want ErrNoPrimary", err)
	}
	if s, _, err := a.client.Session().Info(ls.session, nil); err != nil || s != nil {
		t.Fatalf("session after Close: %+v, %v; want destroyed", s, err)
	}
}

func TestSecondCandidate(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	// A long lock-delay makes an immediate takeover after Close meaningful:
	// it proves Close released the lock rather than letting it expire.
	const lockDelay = 5 * time.Second
	a := newTestLeaser(t, agent.URL(), key, "a", lockDelay)
	b := newTestLeaser(t, agent.URL(), key, "b", lockDelay)
	ctx := testContext(t)

	la := mustAcquire(t, a)
	if _, err := b.Acquire(ctx); !errors.Is(err, lease.ErrPrimaryExists) {
		t.Fatalf("b.Acquire while a holds: %v, want ErrPrimaryExists", err)
	}
	if info, err := b.PrimaryInfo(ctx); err != nil || info.Hostname != "a" {
		t.Fatalf("b.PrimaryInfo: %+v, %v; want a", info, err)
	}
	// A refused candidate must not leave sessions behind.
	if ss, _, err := b.client.Session().List(nil); err != nil || len(ss) != 1 {
		t.Fatalf("sessions after refused acquire: %d, %v; want only a's", len(ss), err)
	}

	if err := la.Close(); err != nil {
		t.Fatalf("a Close: %v", err)
	}
	start := time.Now()
	lb, err := b.Acquire(ctx)
	if err != nil {
		t.Fatalf("b.Acquire right after a.Close: %v", err)
	}
	defer lb.Close()
	if d := time.Since(start); d >= lockDelay {
		t.Fatalf("takeover took %s, not under lock-delay %s", d, lockDelay)
	}
	if info, err := a.PrimaryInfo(ctx); err != nil || info.Hostname != "b" {
		t.Fatalf("a.PrimaryInfo: %+v, %v; want b", info, err)
	}
}

// TestLeaseLost covers the lock vanishing behind the holder's back: the
// holder must learn it at its next Renew.
func TestLeaseLost(t *testing.T) {
	agent := consultest.Start(t)
	tests := []struct {
		name string
		lose func(t *testing.T, l *Leaser, ls *consulLease)
		// expired: a successor must wait out the lock-delay, as after a
		// real TTL expiry.
		expired bool
	}{
		{"session destroyed", func(t *testing.T, l *Leaser, ls *consulLease) {
			if _, err := l.client.Session().Destroy(ls.session, nil); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"key deleted", func(t *testing.T, l *Leaser, ls *consulLease) {
			if _, err := l.client.KV().Delete(l.cfg.Key, nil); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	const lockDelay = 2 * time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := testKey(t)
			a := newTestLeaser(t, agent.URL(), key, "a", lockDelay)
			b := newTestLeaser(t, agent.URL(), key, "b", lockDelay)
			ctx := testContext(t)

			la := mustAcquire(t, a)
			tt.lose(t, a, la)
			if err := la.Renew(ctx); !errors.Is(err, lease.ErrLeaseExpired) {
				t.Fatalf("Renew after loss: %v, want ErrLeaseExpired", err)
			}
			if err := la.Renew(ctx); !errors.Is(err, lease.ErrLeaseExpired) {
				t.Fatalf("second Renew after loss: %v, want ErrLeaseExpired", err)
			}
			if _, err := a.PrimaryInfo(ctx); !errors.Is(err, lease.ErrNoPrimary) {
				t.Fatalf("PrimaryInfo after loss: %v, want ErrNoPrimary", err)
			}

			start := time.Now()
			if tt.expired {
				if _, err := b.Acquire(ctx); !errors.Is(err, lease.ErrPrimaryExists) {
					t.Fatalf("b.Acquire within lock-delay: %v, want ErrPrimaryExists", err)
				}
			}
			acquireWithin(t, b, lockDelay+5*time.Second)
			if tt.expired && time.Since(start) < lockDelay/2 {
				t.Fatalf("b acquired after %s, before the lock-delay", time.Since(start))
			}
			// The lost lease's session is gone either way.
			if s, _, err := a.client.Session().Info(la.session, nil); err != nil || s != nil {
				t.Fatalf("lost session still present: %+v, %v", s, err)
			}
		})
	}
}

func TestPrimaryInfoUndecodable(t *testing.T) {
	agent := consultest.Start(t)
	a := newTestLeaser(t, agent.URL(), testKey(t), "a", time.Second)
	ctx := testContext(t)
	id, _, err := a.client.Session().CreateNoChecks(&api.SessionEntry{TTL: "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := a.client.KV().Acquire(&api.KVPair{Key: a.cfg.Key, Value: []byte("not json"), Session: id}, nil); err != nil || !ok {
		t.Fatalf("acquire by hand: %v %v", ok, err)
	}
	if _, err := a.PrimaryInfo(ctx); err == nil || errors.Is(err, lease.ErrNoPrimary) {
		t.Fatalf("PrimaryInfo of garbage: %v, want a decode error", err)
	}
}

func TestOpen(t *testing.T) {
	notConsul := httptest.NewServer(http.NotFoundHandler())
	defer notConsul.Close()
	agent := consultest.Start(t)

	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"consul", agent.URL(), false},
		{"nothing listening", "http://127.0.0.1:1", true},
		{"not consul", notConsul.URL, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(Config{URL: tt.url, Hostname: "a", AdvertiseURL: "http://a:20202"})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			start := time.Now()
			err = l.Open(testContext(t))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Open succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.url) {
				t.Fatalf("Open error %q does not name the URL", err)
			}
			// Bounded by the client timeout, not the test context.
			if d := time.Since(start); d > requestTimeout+time.Second {
				t.Fatalf("Open took %s to fail", d)
			}
			t.Logf("Open(%s): %v", tt.url, err)
		})
	}
}
