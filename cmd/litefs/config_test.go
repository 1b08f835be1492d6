package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestNewConfig_Defaults(t *testing.T) {
	got := NewConfig()
	want := Config{
		Data: DataConfig{
			Retention:                10 * time.Minute,
			RetentionMonitorInterval: 1 * time.Minute,
		},
		Lease: LeaseConfig{
			ReconnectDelay: 1 * time.Second,
			DemoteDelay:    10 * time.Second,
			Consul: ConsulConfig{
				Key:       "litefs/primary",
				TTL:       10 * time.Second,
				LockDelay: 1 * time.Second,
			},
		},
		HTTP: HTTPConfig{Addr: ":20202"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("NewConfig() =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseConfig_Empty(t *testing.T) {
	for _, tc := range []struct {
		name, data string
	}{
		{"empty", ""},
		{"comments only", "# nothing here\n"},
		{"document marker", "---\n"},
		{"null sections", "fuse:\ndata:\nlease:\n  consul:\nhttp:\n"},
		{"null values", "data:\n  retention:\n  retention-monitor-interval: ~\nhttp:\n  addr: null\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.data), true)
			if err != nil {
				t.Fatal(err)
			}
			if want := NewConfig(); !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v, want defaults %+v", got, want)
			}
		})
	}
}

func TestParseConfig_AllKeys(t *testing.T) {
	data := `
fuse:
  dir: /mnt/litefs
  allow-other: true
  debug: true
data:
  dir: /var/lib/litefs
  retention: 5m
  retention-monitor-interval: 30s
lease:
  type: consul
  candidate: yes
  hostname: node1
  advertise-url: http://node1:20202
  reconnect-delay: 2s
  demote-delay: 15s
  consul:
    url: http://consul:8500
    key: app/primary
    ttl: 20s
    lock-delay: 0s
http:
  addr: "127.0.0.1:3000"
exit-on-error: true
skip-sync: true
`
	got, err := ParseConfig([]byte(data), false)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		FUSE: FUSEConfig{Dir: "/mnt/litefs", AllowOther: true, Debug: true},
		Data: DataConfig{
			Dir:                      "/var/lib/litefs",
			Retention:                5 * time.Minute,
			RetentionMonitorInterval: 30 * time.Second,
		},
		Lease: LeaseConfig{
			Type:           "consul",
			Candidate:      true,
			Hostname:       "node1",
			AdvertiseURL:   "http://node1:20202",
			ReconnectDelay: 2 * time.Second,
			DemoteDelay:    15 * time.Second,
			Consul: ConsulConfig{
				URL:       "http://consul:8500",
				Key:       "app/primary",
				TTL:       20 * time.Second,
				LockDelay: 0,
			},
		},
		HTTP:        HTTPConfig{Addr: "127.0.0.1:3000"},
		ExitOnError: true,
		SkipSync:    true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParseConfig_PartialKeepsDefaults(t *testing.T) {
	got, err := ParseConfig([]byte("data:\n  dir: /data\nlease:\n  consul:\n    key: k\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	want := NewConfig()
	want.Data.Dir = "/data"
	want.Lease.Consul.Key = "k"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestParseConfig_Aliases(t *testing.T) {
	// Unknown keys are rejected, so the anchor must sit on a known key.
	data := "lease:\n  advertise-url: &u http://primary:20202\n  consul:\n    url: *u\n"
	got, err := ParseConfig([]byte(data), false)
	if err != nil {
		t.Fatal(err)
	}
	if got.Lease.Consul.URL != "http://primary:20202" {
		t.Fatalf("alias not resolved: %q", got.Lease.Consul.URL)
	}
}

func TestParseConfig_EnvExpansion(t *testing.T) {
	t.Setenv("LFS_TEST_DIR", "/env/mnt")
	t.Setenv("LFS_TEST_HOST", "envhost")
	t.Setenv("LFS_TEST_TTL", "30s")
	t.Setenv("LFS_TEST_CANDIDATE", "true")
	// Characters that would break YAML if expanded into the raw text.
	t.Setenv("LFS_TEST_TRICKY", "a: b # c\nd")

	data := `
fuse:
  dir: ${LFS_TEST_DIR}
lease:
  hostname: "$LFS_TEST_HOST-1"
  candidate: ${LFS_TEST_CANDIDATE}
  advertise-url: ${LFS_TEST_TRICKY}
  consul:
    ttl: ${LFS_TEST_TTL}
    key: "${LFS_TEST_UNSET_VARIABLE}"
`
	for _, tc := range []struct {
		name   string
		expand bool
		want   LeaseConfig
		dir    string
	}{
		{
			name:   "enabled",
			expand: true,
			dir:    "/env/mnt",
			want: LeaseConfig{
				Hostname:     "envhost-1",
				Candidate:    true,
				AdvertiseURL: "a: b # c\nd",
				Consul:       ConsulConfig{TTL: 30 * time.Second, Key: ""},
			},
		},
		{
			name:   "disabled",
			expand: false,
			dir:    "${LFS_TEST_DIR}",
			want: LeaseConfig{
				Hostname:     "$LFS_TEST_HOST-1",
				AdvertiseURL: "${LFS_TEST_TRICKY}",
				Consul:       ConsulConfig{Key: "${LFS_TEST_UNSET_VARIABLE}"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := data
			if !tc.expand {
				// Unexpanded, these would be type errors; drop them.
				d = strings.Replace(d, "  candidate: ${LFS_TEST_CANDIDATE}\n", "", 1)
				d = strings.Replace(d, "    ttl: ${LFS_TEST_TTL}\n", "", 1)
			}
			got, err := ParseConfig([]byte(d), tc.expand)
			if err != nil {
				t.Fatal(err)
			}
			if got.FUSE.Dir != tc.dir {
				t.Errorf("fuse.dir = %q, want %q", got.FUSE.Dir, tc.dir)
			}
			l := got.Lease
			if l.Hostname != tc.want.Hostname || l.Candidate != tc.want.Candidate ||
				l.AdvertiseURL != tc.want.AdvertiseURL || l.Consul.Key != tc.want.Consul.Key {
				t.Errorf("lease = %+v, want %+v", l, tc.want)
			}
			if tc.expand && l.Consul.TTL != tc.want.Consul.TTL {
				t.Errorf("ttl = %s, want %s", l.Consul.TTL, tc.want.Consul.TTL)
			}
		})
	}

	t.Run("disabled keeps literal for typed fields", func(t *testing.T) {
		_, err := ParseConfig([]byte("lease:\n  consul:\n    ttl: ${LFS_TEST_TTL}\n"), false)
		wantErrContains(t, err, "config line 3", `invalid duration "${LFS_TEST_TTL}"`, `"lease.consul.ttl"`)
	})
}

func TestParseConfig_Errors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want []string // substrings of the error
	}{
		{
			name: "unknown top-level key",
			data: "fuse:\n  dir: /litefs\n\nexit-on-eror: true\n",
			want: []string{`config line 4: unknown key "exit-on-eror"`, "valid keys: fuse, data, lease, http, exit-on-error, skip-sync"},
		},
		{
			name: "unknown nested key",
			data: "# comment\nfuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\n\n  retension: 1h\n",
			want: []string{`config line 7: unknown key "retension" in "data"`},
		},
		{
			name: "unknown deeply nested key",
			data: "lease:\n  type: consul\n  consul:\n    url: http://x\n    tll: 10s\n",
			want: []string{`config line 5: unknown key "tll" in "lease.consul"`, "valid keys: url, key, ttl, lock-delay"},
		},
		{
			name: "keys are case sensitive",
			data: "FUSE:\n  dir: /x\n",
			want: []string{`config line 1: unknown key "FUSE"`},
		},
		{
			name: "duplicate key",
			data: "data:\n  dir: /a\n  dir: /b\n",
			want: []string{`config line 3: duplicate key "data.dir" (first set on line 2)`},
		},
		{
			name: "bad duration",
			data: "data:\n  retention: 10x\n",
			want: []string{`config line 2: invalid duration "10x" for "data.retention"`},
		},
		{
			name: "duration without unit",
			data: "lease:\n  consul:\n    ttl: 10\n",
			want: []string{`config line 3: invalid duration "10" for "lease.consul.ttl"`},
		},
		{
			name: "bad boolean",
			data: "lease:\n  type: static\n  candidate: maybe\n",
			want: []string{`config line 3: invalid boolean "maybe" for "lease.candidate"`},
		},
		{
			name: "bad top-level boolean",
			data: "skip-sync: 1\n",
			want: []string{`config line 1: invalid boolean "1" for "skip-sync"`},
		},
		{
			name: "list for string",
			data: "fuse:\n  dir:\n    - /a\n",
			want: []string{`config line 3: "fuse.dir" must be a single value, got a list`},
		},
		{
			name: "mapping for string",
			data: "http:\n  addr: {host: x}\n",
			want: []string{`config line 2: "http.addr" must be a single value, got a mapping`},
		},
		{
			name: "scalar for section",
			data: "fuse: /litefs\n",
			want: []string{`config line 1: "fuse" must be a mapping of keys, got the value "/litefs"`},
		},
		{
			name: "top level not a mapping",
			data: "- fuse\n",
			want: []string{"config line 1: top level must be a mapping of keys, got a list"},
		},
		{
			name: "yaml syntax error",
			data: "fuse:\n  dir: /a\n dir: /b\n",
			want: []string{"config: yaml: line 2: did not find expected key"},
		},
		{
			name: "multiple documents",
			data: "fuse:\n  dir: /a\n---\nfuse:\n  dir: /b\n",
			want: []string{"config line 4: multiple YAML documents are not supported"},
		},
		{
			name: "merge key",
			data: "base: &b\n  dir: /a\n",
			want: []string{`config line 1: unknown key "base"`},
		},
		{
			name: "merge key in section",
			data: "fuse:\n  <<: {dir: /a}\n",
			want: []string{"config line 2: merge keys (<<) are not supported", `"fuse"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.data), true)
			wantErrContains(t, err, tc.want...)
			if !reflect.DeepEqual(cfg, NewConfig()) {
				t.Errorf("on error, config should be the defaults, got %+v", cfg)
			}
		})
	}
}

// validConfig returns a config that passes Validate, for tests to break.
func validConfig(t *testing.T) Config {
	t.Helper()
	c := NewConfig()
	c.FUSE.Dir = "/litefs"
	c.Data.Dir = "/var/lib/litefs"
	c.Lease.Type = "static"
	c.Lease.Candidate = true
	c.Lease.Hostname = "node1"
	if err := c.Validate(); err != nil {
		t.Fatalf("base config invalid: %v", err)
	}
	return c
}

func consulConfig(c *Config) {
	c.Lease.Type = "consul"
	c.Lease.AdvertiseURL = "http://node1:20202"
	c.Lease.Consul.URL = "http://localhost:8500"
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(c *Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid static primary", func(c *Config) {}, ""},
		{"valid static replica", func(c *Config) {
			c.Lease.Candidate = false
			c.Lease.AdvertiseURL = "https://primary.internal:20202/"
		}, ""},
		{"valid consul", consulConfig, ""},
		{"valid consul zero lock-delay and max ttl", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.LockDelay = 0
			c.Lease.Consul.TTL = 24 * time.Hour
		}, ""},
		{"valid ipv6 addr", func(c *Config) { c.HTTP.Addr = "[::1]:20202" }, ""},
		{"sibling dirs sharing a prefix", func(c *Config) {
			c.FUSE.Dir = "/litefs"
			c.Data.Dir = "/litefs-data"
		}, ""},

		{"fuse.dir missing", func(c *Config) { c.FUSE.Dir = "" }, "fuse.dir is required"},
		{"data.dir missing", func(c *Config) { c.Data.Dir = "" }, "data.dir is required"},
		{"same dirs", func(c *Config) { c.Data.Dir = "/litefs/" }, "fuse.dir and data.dir must be different directories"},
		{"data inside fuse", func(c *Config) { c.Data.Dir = "/litefs/data" }, `data.dir "/litefs/data" must not be inside fuse.dir "/litefs"`},
		{"fuse inside data", func(c *Config) { c.FUSE.Dir = "/var/lib/litefs/mnt" }, `fuse.dir "/var/lib/litefs/mnt" must not be inside data.dir "/var/lib/litefs"`},

		{"retention zero", func(c *Config) { c.Data.Retention = 0 }, "data.retention must be greater than zero"},
		{"retention negative", func(c *Config) { c.Data.Retention = -time.Second }, "data.retention must be greater than zero"},
		{"monitor interval zero", func(c *Config) { c.Data.RetentionMonitorInterval = 0 }, "data.retention-monitor-interval must be greater than zero"},

		{"lease.type missing", func(c *Config) { c.Lease.Type = "" }, "lease.type is required (static or consul)"},
		{"lease.type invalid", func(c *Config) { c.Lease.Type = "x" }, `lease.type "x" is invalid: must be "static" or "consul"`},
		{"lease.type case", func(c *Config) { c.Lease.Type = "Static" }, `lease.type "Static" is invalid`},
		{"reconnect-delay negative", func(c *Config) { c.Lease.ReconnectDelay = -1 }, "lease.reconnect-delay must not be negative"},
		{"demote-delay negative", func(c *Config) { c.Lease.DemoteDelay = -1 }, "lease.demote-delay must not be negative"},

		{"static replica without advertise-url", func(c *Config) { c.Lease.Candidate = false },
			"lease.advertise-url is required when lease.type is static and lease.candidate is false"},
		{"static relative advertise-url", func(c *Config) {
			c.Lease.Candidate = false
			c.Lease.AdvertiseURL = "primary:20202"
		}, `lease.advertise-url "primary:20202" is invalid: must be an absolute http:// or https:// URL`},
		{"static advertise-url wrong scheme", func(c *Config) { c.Lease.AdvertiseURL = "ftp://primary" },
			"must be an absolute http:// or https:// URL"},
		{"static advertise-url no host", func(c *Config) { c.Lease.AdvertiseURL = "http:///path" },
			`lease.advertise-url "http:///path" is invalid: missing host`},
		{"static advertise-url bad port", func(c *Config) { c.Lease.AdvertiseURL = "http://primary:99999" },
			`port "99999" must be a number from 0 to 65535`},
		{"static advertise-url unparsable", func(c *Config) { c.Lease.AdvertiseURL = "http://[::1" },
			`lease.advertise-url "http://[::1" is invalid`},

		{"consul url missing", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.URL = ""
		}, "lease.consul.url is required when lease.type is consul"},
		{"consul url invalid", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.URL = "localhost:8500"
		}, `lease.consul.url "localhost:8500" is invalid`},
		{"consul advertise-url missing", func(c *Config) {
			consulConfig(c)
			c.Lease.AdvertiseURL = ""
		}, "lease.advertise-url is required when lease.type is consul"},
		{"consul advertise-url invalid", func(c *Config) {
			consulConfig(c)
			c.Lease.AdvertiseURL = "node1"
		}, `lease.advertise-url "node1" is invalid`},
		{"consul key empty", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.Key = ""
		}, "lease.consul.key must not be empty"},
		{"consul ttl too small", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.TTL = 5 * time.Second
		}, "lease.consul.ttl must be between 10s and 24h0m0s (Consul's limits), got 5s"},
		{"consul ttl too large", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.TTL = 25 * time.Hour
		}, "lease.consul.ttl must be between"},
		{"consul lock-delay negative", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.LockDelay = -time.Second
		}, "lease.consul.lock-delay must be between 0s and 1m0s"},
		{"consul lock-delay too large", func(c *Config) {
			consulConfig(c)
			c.Lease.Consul.LockDelay = 2 * time.Minute
		}, "lease.consul.lock-delay must be between"},
		{"consul settings ignored for static", func(c *Config) {
			c.Lease.Consul.TTL = time.Second
			c.Lease.Consul.URL = "bogus"
		}, ""},

		{"http.addr empty", func(c *Config) { c.HTTP.Addr = "" }, `http.addr "" is invalid: must be host:port`},
		{"http.addr no port", func(c *Config) { c.HTTP.Addr = "localhost" }, `http.addr "localhost" is invalid: must be host:port`},
		{"http.addr empty port", func(c *Config) { c.HTTP.Addr = ":" }, `http.addr ":" is invalid: port "" must be a number`},
		{"http.addr named port", func(c *Config) { c.HTTP.Addr = ":http" }, `port "http" must be a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			wantErrContains(t, err, tc.want)
		})
	}
}

func TestNormalize(t *testing.T) {
	t.Chdir(t.TempDir())
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}

	c := NewConfig()
	c.FUSE.Dir = "mnt/../mnt/"
	c.Data.Dir = "./data"
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "mnt"); c.FUSE.Dir != want {
		t.Errorf("fuse.dir = %q, want %q", c.FUSE.Dir, want)
	}
	if want := filepath.Join(wd, "data"); c.Data.Dir != want {
		t.Errorf("data.dir = %q, want %q", c.Data.Dir, want)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if c.Lease.Hostname != host {
		t.Errorf("hostname = %q, want os.Hostname() %q", c.Lease.Hostname, host)
	}

	// Idempotent, and an explicit hostname is kept.
	c.Lease.Hostname = "explicit"
	before := c
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	if c != before {
		t.Errorf("second Normalize changed config: %+v -> %+v", before, c)
	}
}

func TestReadConfigFile(t *testing.T) {
	dir := t.TempDir()

	t.Run("ok", func(t *testing.T) {
		path := filepath.Join(dir, "ok.yml")
		writeFile(t, path, "fuse:\n  dir: /litefs\n")
		c, err := ReadConfigFile(path, true)
		if err != nil {
			t.Fatal(err)
		}
		if c.FUSE.Dir != "/litefs" {
			t.Fatalf("fuse.dir = %q", c.FUSE.Dir)
		}
	})
	t.Run("parse error names file", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yml")
		writeFile(t, path, "fuse:\n  dri: /litefs\n")
		_, err := ReadConfigFile(path, true)
		wantErrContains(t, err, path+": config line 2: unknown key \"dri\" in \"fuse\"")
	})
	t.Run("missing file names file", func(t *testing.T) {
		path := filepath.Join(dir, "missing.yml")
		_, err := ReadConfigFile(path, true)
		wantErrContains(t, err, "read config", path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error should wrap fs.ErrNotExist: %v", err)
		}
	})
}

func TestFindConfigPath(t *testing.T) {
	// Replace /etc/litefs.yml with a temp path so the test does not depend
	// on the machine.
	etc := filepath.Join(t.TempDir(), "etc-litefs.yml")
	orig := configSearchPaths
	configSearchPaths = []string{"litefs.yml", etc}
	t.Cleanup(func() { configSearchPaths = orig })

	t.Run("default search paths", func(t *testing.T) {
		if want := []string{"litefs.yml", "/etc/litefs.yml"}; !reflect.DeepEqual(orig, want) {
			t.Fatalf("configSearchPaths = %q, want %q", orig, want)
		}
	})

	t.Run("none", func(t *testing.T) {
		t.Chdir(t.TempDir())
		_, err := FindConfigPath()
		wantErrContains(t, err, "no config file found", "./litefs.yml", etc)
	})

	t.Run("only etc", func(t *testing.T) {
		t.Chdir(t.TempDir())
		writeFile(t, etc, "")
		t.Cleanup(func() { os.Remove(etc) })
		got, err := FindConfigPath()
		if err != nil {
			t.Fatal(err)
		}
		if got != etc {
			t.Fatalf("got %q, want %q", got, etc)
		}
	})

	t.Run("local wins", func(t *testing.T) {
		t.Chdir(t.TempDir())
		writeFile(t, etc, "")
		t.Cleanup(func() { os.Remove(etc) })
		writeFile(t, "litefs.yml", "")
		got, err := FindConfigPath()
		if err != nil {
			t.Fatal(err)
		}
		if got != "litefs.yml" {
			t.Fatalf("got %q, want litefs.yml", got)
		}
	})

	t.Run("directory is an error", func(t *testing.T) {
		t.Chdir(t.TempDir())
		if err := os.Mkdir("litefs.yml", 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := FindConfigPath()
		wantErrContains(t, err, "litefs.yml is a directory")
	})
}

// TestExampleConfig keeps litefs.yml.example in sync with the parser.
func TestExampleConfig(t *testing.T) {
	t.Setenv("HOSTNAME", "example-host")
	c, err := ReadConfigFile(filepath.Join("..", "..", "litefs.yml.example"), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example does not validate: %v", err)
	}

	want := NewConfig()
	want.FUSE.Dir = "/litefs"
	want.Data.Dir = "/var/lib/litefs"
	want.Lease.Type = "static"
	want.Lease.Candidate = true
	want.Lease.Hostname = "example-host"
	want.Lease.AdvertiseURL = "http://localhost:20202"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example config =\n%+v\nwant\n%+v", c, want)
	}

	// With $HOSTNAME unset the hostname falls back to os.Hostname().
	os.Unsetenv("HOSTNAME") // restored by t.Setenv's cleanup
	c, err = ReadConfigFile(filepath.Join("..", "..", "litefs.yml.example"), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); c.Lease.Hostname != host {
		t.Fatalf("hostname = %q, want %q", c.Lease.Hostname, host)
	}
}

func wantErrContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected error containing %q, got nil", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
