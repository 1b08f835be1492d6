package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Side names, as used in progress lines and the report.
const (
	sidePlain  = "plain"
	sideLitefs = "litefs"
)

// run performs the whole benchmark and writes the report to stdout.
// Progress goes to stderr so that stdout stays a clean table or JSON.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	work, err := makeWorkDir(cfg.dir, logf)
	if err != nil {
		return err
	}
	var proc *litefsProc
	defer func() {
		// Stop litefs before deleting anything: removing a live mount's
		// files would go through FUSE, and an unmount failure must keep the
		// scratch dir so nothing under a still-mounted dir is touched.
		if stopErr := proc.stop(logf); stopErr != nil && err == nil {
			err = stopErr
		}
		cleanupWorkDir(work, cfg.keep || hasMountUnder(work), logf)
	}()

	plainDir := filepath.Join(work, "plain")
	if err := os.Mkdir(plainDir, 0o755); err != nil {
		return fmt.Errorf("create plain dir: %w", err)
	}

	wls, _ := selectWorkloads(cfg)
	parts := selectRepl(cfg)
	rep := newReport(cfg, work, cfg.mountDir, cfg.pid)
	if len(wls) > 0 || cfg.rssDBMB > 0 {
		if proc, err = runMain(ctx, cfg, wls, work, plainDir, rep, logf); err != nil {
			return err
		}
		// The single node is done with: stop it so it does not share the
		// machine with the replication nodes.
		stopErr := proc.stop(logf)
		proc = nil
		if stopErr != nil {
			return stopErr
		}
	}
	if parts.any() {
		bin := rep.LitefsBin
		if bin == "" {
			if bin, err = resolveLitefs(ctx, cfg.litefsBin, work, logf); err != nil {
				return err
			}
			rep.LitefsBin = bin
		}
		if rep.Repl, err = runReplication(ctx, cfg, parts, bin, work, plainDir, logf); err != nil {
			return err
		}
	}
	rep.Elapsed = time.Since(rep.started).Round(time.Second).String()
	rep.LoadEnd = loadAvg()
	if cfg.jsonOut {
		return rep.writeJSON(stdout)
	}
	rep.writeMarkdown(stdout)
	return nil
}

// runMain runs the single-node workloads (and -rss-db-mb) on a litefs it
// starts, or on -mount-dir, filling rep. It returns the started litefs,
// still running, for the caller to stop, also when it fails.
func runMain(ctx context.Context, cfg config, wls []workload, work, plainDir string, rep *report,
	logf func(string, ...any)) (proc *litefsProc, err error) {
	mountDir, pid := cfg.mountDir, cfg.pid
	if mountDir == "" {
		proc, err = launchLitefs(ctx, cfg, work, logf)
		if err != nil {
			return nil, err
		}
		mountDir, pid = proc.mnt, proc.pid()
	} else if mountDir, err = checkMountDir(mountDir, logf); err != nil {
		return nil, err
	} else if pid > 0 {
		if _, err := readStatusKB(pid, "VmRSS"); err != nil {
			return nil, fmt.Errorf("-pid: %w", err)
		}
	}
	rep.MountDir, rep.LitefsPID, rep.LitefsBin = mountDir, pid, proc.binPath()
	rep.mainRan = true
	sampler := newRSSSampler(pid)
	var created []string
	if cfg.mountDir != "" {
		// Our files in someone else's mount are removed at the end; files
		// in our own scratch dir go with it.
		defer func() { removeDBFiles(created, logf) }()
	}

	b := &bencher{cfg: cfg, plainDir: plainDir, mountDir: mountDir, sampler: sampler, logf: logf,
		onCreate: func(side, path string) {
			if side == sideLitefs {
				created = append(created, path)
			}
		}}
	if err := b.warmUp(ctx); err != nil {
		return proc, err
	}
	for _, w := range wls {
		row, err := b.compare(ctx, w)
		if err != nil {
			return proc, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	if cfg.rssDBMB > 0 {
		res, err := b.buildLargeDB(ctx, cfg.rssDBMB)
		if err != nil {
			return proc, err
		}
		rep.RSS.BigDB = res
	}
	rep.finishRSS(sampler)
	return proc, nil
}

// launchLitefs finds or builds the binary, writes its config and starts it.
func launchLitefs(ctx context.Context, cfg config, work string, logf func(string, ...any)) (*litefsProc, error) {
	bin, err := resolveLitefs(ctx, cfg.litefsBin, work, logf)
	if err != nil {
		return nil, err
	}
	port := cfg.port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	return startLitefs(ctx, bin, work, port, logf)
}

// newReport fills the parts of the report known before any run.
func newReport(cfg config, work, mountDir string, pid int) *report {
	return &report{
		started:   time.Now(),
		Rounds:    cfg.rounds,
		Stat:      "median",
		Duration:  cfg.duration.String(),
		Slice:     cfg.slice.String(),
		WorkDir:   work,
		MountDir:  mountDir,
		LitefsPID: pid,
		FSType:    fsTypeName(work),
		GoVersion: runtime.Version(),
		CPUs:      runtime.NumCPU(),
		LoadStart: loadAvg(),
	}
}
