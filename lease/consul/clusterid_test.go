package consul

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/replfs/litefs/internal/consultest"
	"github.com/replfs/litefs/lease"
)

func TestClusterID(t *testing.T) {
	agent := consultest.Start(t)
	tests := []struct {
		name    string
		initial string // "" = key absent
		set     string
		wantErr error
		want    string
	}{
		{"first set", "", "LFSC1", nil, "LFSC1"},
		{"same again", "LFSC1", "LFSC1", nil, "LFSC1"},
		{"mismatch", "LFSC1", "LFSC2", lease.ErrClusterIDMismatch, "LFSC1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestLeaser(t, agent.URL(), testKey(t), "a", time.Second)
			ctx := testContext(t)
			if id, err := l.ClusterID(ctx); err != nil || id != "" {
				t.Fatalf("ClusterID on fresh key: %q, %v", id, err)
			}
			if tt.initial != "" {
				if err := l.SetClusterID(ctx, tt.initial); err != nil {
					t.Fatalf("initial SetClusterID: %v", err)
				}
			}
			if err := l.SetClusterID(ctx, tt.set); !errors.Is(err, tt.wantErr) {
				t.Fatalf("SetClusterID(%q): %v, want %v", tt.set, err, tt.wantErr)
			}
			if id, err := l.ClusterID(ctx); err != nil || id != tt.want {
				t.Fatalf("ClusterID: %q, %v; want %q", id, err, tt.want)
			}
		})
	}

	t.Run("empty id", func(t *testing.T) {
		l := newTestLeaser(t, agent.URL(), testKey(t), "a", time.Second)
		if err := l.SetClusterID(testContext(t), ""); err == nil {
			t.Fatal("SetClusterID(\"\") succeeded")
		}
	})
}

// TestClusterIDRace has several nodes set different IDs at once: exactly one
// must win and the rest must see a mismatch.
func TestClusterIDRace(t *testing.T) {
	agent := consultest.Start(t)
	key := testKey(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		l := newTestLeaser(t, agent.URL(), key, "node", time.Second)
		id := string(rune('A' + i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.SetClusterID(testContext(t), id)
		}()
	}
	wg.Wait()

	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, lease.ErrClusterIDMismatch):
			t.Errorf("node %d: %v", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d nodes set the cluster id, want exactly 1 (%v)", winners, errs)
	}
}
