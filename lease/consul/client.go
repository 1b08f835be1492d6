package consul

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/consul/api"
)

// requestTimeout bounds every HTTP request to Consul. The lease code never
// issues blocking queries, so a request that takes longer than this means
// Consul is gone or wedged; failing it lets the caller step down instead of
// hanging past its own lease TTL.
const requestTimeout = 5 * time.Second

// newClient builds a Consul API client for url with bounded timeouts.
func newClient(url string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = url
	cfg.Transport.DialContext = (&net.Dialer{Timeout: requestTimeout, KeepAlive: 30 * time.Second}).DialContext
	cfg.Transport.ResponseHeaderTimeout = requestTimeout
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul http client: %w", err)
	}
	hc.Timeout = requestTimeout
	cfg.HttpClient = hc
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", url, err)
	}
	return c, nil
}

// wopts and qopts attach ctx to a request so cancellation reaches the wire.
func wopts(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{}).WithContext(ctx)
}

func qopts(ctx context.Context) *api.QueryOptions {
	// RequireConsistent: lease decisions must not be made from a stale
	// follower read; with a single server this costs nothing.
	return (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
}

// cleanupContext is used by calls that have no caller context (Close) or
// that must run even after the caller's context was cancelled (destroying a
// session we no longer want). It is bounded so it cannot hang.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), requestTimeout)
}

// keyHeld reports whether key is currently locked by session.
func keyHeld(ctx context.Context, kv *api.KV, key, session string) (bool, error) {
	p, _, err := kv.Get(key, qopts(ctx))
	if err != nil {
		return false, err
	}
	return p != nil && p.Session == session, nil
}
