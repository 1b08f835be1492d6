package consul

import (
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	base := Config{URL: "http://127.0.0.1:8500", Hostname: "a", AdvertiseURL: "http://a:20202"}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"https", func(c *Config) { c.URL = "https://consul.example:8501" }, ""},
		{"no url", func(c *Config) { c.URL = "" }, "url"},
		{"no scheme", func(c *Config) { c.URL = "127.0.0.1:8500" }, "url"},
		{"bad scheme", func(c *Config) { c.URL = "ftp://127.0.0.1:8500" }, "url"},
		{"ttl too short", func(c *Config) { c.TTL = 5 * time.Second }, "ttl"},
		{"ttl fraction", func(c *Config) { c.TTL = 10500 * time.Millisecond }, "ttl"},
		{"negative lock delay", func(c *Config) { c.LockDelay = -time.Second }, "lock-delay"},
		{"lock delay too long", func(c *Config) { c.LockDelay = 2 * time.Minute }, "lock-delay"},
		{"no hostname", func(c *Config) { c.Hostname = "" }, "hostname"},
		{"no advertise url", func(c *Config) { c.AdvertiseURL = "" }, "advertise-url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			_, err := New(cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New: err %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	l, err := New(Config{URL: "http://127.0.0.1:8500", Key: "/x/y/", Hostname: "a", AdvertiseURL: "http://a:20202"})
	if err != nil {
		t.Fatal(err)
	}
	if l.cfg.Key != "x/y" || l.cfg.TTL != DefaultTTL || l.cfg.LockDelay != DefaultLockDelay {
		t.Fatalf("defaults not applied: %+v", l.cfg)
	}
	if l.Type() != "consul" || l.Hostname() != "a" || l.AdvertiseURL() != "http://a:20202" {
		t.Fatalf("accessors: %q %q %q", l.Type(), l.Hostname(), l.AdvertiseURL())
	}
	l, err = New(Config{URL: "http://127.0.0.1:8500", Hostname: "a", AdvertiseURL: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if l.cfg.Key != DefaultKey {
		t.Fatalf("key %q, want %q", l.cfg.Key, DefaultKey)
	}
}
