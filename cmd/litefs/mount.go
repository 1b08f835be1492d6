package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/cluster"
	lfuse "github.com/replfs/litefs/fuse"
	lhttp "github.com/replfs/litefs/http"
	"github.com/replfs/litefs/lease"
	"github.com/replfs/litefs/lease/consul"
	"github.com/replfs/litefs/lease/static"
	"github.com/replfs/litefs/store"
)

// mountFlags are the command-line options of `litefs mount`.
type mountFlags struct {
	configPath  string
	noExpandEnv bool
	verify      bool
	cmd         []string
}

func parseMountFlags(args []string) (mountFlags, error) {
	var mf mountFlags
	fs := flag.NewFlagSet("litefs mount", flag.ContinueOnError)
	fs.StringVar(&mf.configPath, "config", "", "path to the config file (default ./litefs.yml, then /etc/litefs.yml)")
	fs.BoolVar(&mf.noExpandEnv, "no-expand-env", false, "do not expand $VAR and ${VAR} in the config file")
	fs.BoolVar(&mf.verify, "verify-checksums", false, "recompute the full database checksum after every commit (slow; for testing)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: litefs mount [flags] [-- command [args...]]

Mounts fuse.dir and serves this node until SIGINT or SIGTERM, then unmounts.
With "-- command", runs the command once the mount is ready, forwards
SIGINT/SIGTERM to it, and exits with its exit code when it finishes.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return mf, err
	}
	mf.cmd = fs.Args()
	return mf, nil
}

func loadConfig(mf mountFlags) (Config, error) {
	path := mf.configPath
	if path == "" {
		p, err := FindConfigPath()
		if err != nil {
			return Config{}, err
		}
		path = p
	}
	cfg, err := ReadConfigFile(path, !mf.noExpandEnv)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func runMount(ctx context.Context, args []string) error {
	mf, err := parseMountFlags(args)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(mf)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.FUSE.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if path := os.Getenv("LITEFS_CPUPROFILE"); path != "" {
		// For performance work: a CPU profile of the whole run.
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// Garbage is mostly per-commit encoder buffers; a soft limit makes the
		// collector keep the node small however big a transaction is.
		debug.SetMemoryLimit(24 << 20)
	}
	node, err := startNode(cfg, mf, log)
	if err != nil {
		return err
	}
	log.Info("mounted", "dir", cfg.FUSE.Dir, "data", cfg.Data.Dir, "version", Version)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var runErr error
	if len(mf.cmd) > 0 {
		runErr = runChild(mf.cmd, sigs, log)
	} else {
		select {
		case sig := <-sigs:
			log.Info("signal received, unmounting", "signal", sig.String())
		case <-ctx.Done():
		}
	}
	if err := node.close(); err != nil {
		log.Error("shutdown", "err", err)
		if runErr == nil {
			runErr = err
		}
	}
	return runErr
}

// node is the set of running parts of a mounted node, closed in reverse order.
type node struct {
	store   *store.Store
	fs      *lfuse.FS
	cluster *cluster.Node
	http    *lhttp.Server
}

func startNode(cfg Config, mf mountFlags, log *slog.Logger) (*node, error) {
	clearStaleMount(cfg.FUSE.Dir, log)
	id := nodeID(cfg.Lease.Hostname)
	st, err := store.Open(store.Config{
		Dir:               cfg.Data.Dir,
		Retention:         cfg.Data.Retention,
		RetentionInterval: cfg.Data.RetentionMonitorInterval,
		SkipSync:          cfg.SkipSync,
		NodeID:            id,
		// A node that may follow another keeps no database the history
		// cannot vouch for: the primary's snapshot replaces it.
		ResyncOnMismatch: !(cfg.Lease.Type == LeaseTypeStatic && cfg.Lease.Candidate),
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	n := &node{store: st}
	leaser, err := newLeaser(cfg, log)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	reg := capture.NewRegistry(st, capture.Options{Logger: log, Verify: mf.verify})
	n.cluster = cluster.New(cluster.Config{
		Store: st, Leaser: leaser, Candidate: cfg.Lease.Candidate, NodeID: fmt.Sprintf("%016x", id),
		ReconnectDelay: cfg.Lease.ReconnectDelay, DemoteDelay: cfg.Lease.DemoteDelay,
		Hooks:  &roleHooks{store: st, capture: reg, mountDir: cfg.FUSE.Dir, log: log},
		Logger: log,
	})
	// The role is known before the mount serves its first request, so a
	// primary is never read-only for a moment and a replica never writable.
	if err := n.cluster.Start(context.Background()); err != nil {
		_ = st.Close()
		return nil, err
	}
	n.fs = lfuse.New(lfuse.Config{
		MountDir: cfg.FUSE.Dir, AllowOther: cfg.FUSE.AllowOther, Debug: cfg.FUSE.Debug,
		Store: st, Capture: reg, Status: n.cluster, Logger: log,
	})
	if err := n.fs.Mount(); err != nil {
		_ = st.Close()
		return nil, err
	}
	if err := startWatchdog(cfg.FUSE.Dir); err != nil {
		log.Warn("no watchdog for the mount: if this process is killed it may hang until the mount is aborted", "err", err)
	}
	st.SetApplyGuard(n.fs)
	n.cluster.Run()
	n.http = lhttp.NewServer(lhttp.ServerConfig{
		Addr: cfg.HTTP.Addr, MountDir: cfg.FUSE.Dir, Store: st, Snapshot: reg, Node: n.cluster, Logger: log,
	})
	if err := n.http.Listen(); err != nil {
		n.http = nil
		_ = n.close()
		return nil, err
	}
	return n, nil
}

// newLeaser builds the configured lease. A Consul lease is checked against
// the agent at once, so a wrong URL stops the node with a clear error.
func newLeaser(cfg Config, log *slog.Logger) (lease.Leaser, error) {
	l := cfg.Lease
	if l.Type == LeaseTypeStatic {
		return static.New(l.Candidate, l.Hostname, l.AdvertiseURL, "", l.AdvertiseURL), nil
	}
	cl, err := consul.New(consul.Config{
		URL: l.Consul.URL, Key: l.Consul.Key, TTL: l.Consul.TTL, LockDelay: l.Consul.LockDelay,
		Hostname: l.Hostname, AdvertiseURL: l.AdvertiseURL, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("consul lease: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Open(ctx); err != nil {
		return nil, err
	}
	return cl, nil
}

func (n *node) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if n.http != nil {
		errs = append(errs, n.http.Close())
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close())
	}
	errs = append(errs, n.fs.Unmount(ctx), n.store.Close())
	return errors.Join(errs...)
}

// clearStaleMount detaches a mount left behind by a node that was killed:
// its directory fails with ENOTCONN and a new mount on top would fail.
// statfs always asks the filesystem (stat may be answered from the
// kernel's attribute cache), so it tells a dead mount from a live one.
func clearStaleMount(dir string, log *slog.Logger) {
	for i := 0; i < 10; i++ {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); !errors.Is(err, syscall.ENOTCONN) {
			return
		}
		log.Warn("detaching stale mount left by a previous run", "dir", dir)
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return
		}
	}
}

// runChild runs the application under the mount, forwarding signals, and
// returns its exit status.
func runChild(argv []string, sigs <-chan os.Signal, log *slog.Logger) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			log.Info("forwarding signal to child", "signal", sig.String())
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitError(ee.ExitCode())
			}
			return err
		}
	}
}

func nodeID(hostname string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(hostname))
	return h.Sum64()
}
