package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Replication part keys, for -only next to the workload keys.
const (
	keyReplLag     = "repl-lag"
	keyReplSelect  = "repl-select"
	keyReplCatchUp = "repl-catchup"
)

func replKeys() []string { return []string{keyReplLag, keyReplSelect, keyReplCatchUp} }

// Targets and the figures measured for superfly/litefs on this machine.
const (
	lagP50TargetMs      = 0.5
	lagP99TargetMs      = 3.0
	replSelectTarget    = 0.5
	catchUpTargetMiBps  = 400
	anchorLag50         = "1.8 ms"
	anchorLag99         = "7-9 ms"
	anchorReplSelect    = "0.03"
	anchorCatchUp       = "100 MB/s"
	lagWarmUpTxs        = 50
	lagIdlePolls        = 200
	lagTxTimeout        = 10 * time.Second
	caughtUpTimeout     = 60 * time.Second
	catchUpPoll         = time.Millisecond
	catchUpRowBlob      = 4000     // one row per 4 KiB page
	catchUpTxBytes      = 64 << 20 // per build transaction
	catchUpPageEstimate = 4096
)

// replParts says which replication measurements to run.
type replParts struct{ lag, sel, catchUp bool }

func (p replParts) any() bool { return p.lag || p.sel || p.catchUp }

// selectRepl resolves -only and -no-replication for the replication part.
func selectRepl(cfg config) replParts {
	if cfg.noRepl {
		return replParts{}
	}
	if strings.TrimSpace(cfg.only) == "" {
		return replParts{lag: true, sel: true, catchUp: true}
	}
	var p replParts
	for _, k := range strings.Split(cfg.only, ",") {
		switch strings.TrimSpace(k) {
		case keyReplLag:
			p.lag = true
		case keyReplSelect:
			p.sel = true
		case keyReplCatchUp:
			p.catchUp = true
		}
	}
	return p
}

// replResult is the replication part of the report; nil parts did not run.
type replResult struct {
	Lag     *lagResult     `json:"lag,omitempty"`
	Select  *resultRow     `json:"select,omitempty"`
	CatchUp *catchUpResult `json:"catchup,omitempty"`
	// ReplicaPeakRSSKB is the replica's peak VmRSS during lag and select.
	ReplicaPeakRSSKB int64  `json:"replica_peak_vmrss_kb,omitempty"`
	ReplicaRSSResult string `json:"replica_rss_result,omitempty"`
	PrimaryURL       string `json:"primary_url,omitempty"`
	Dir              string `json:"dir"`
}

// lagResult is commit-to-visible lag: from COMMIT returning on the primary
// until the replica's <db>-pos shows the primary's new position.
type lagResult struct {
	Txs        int     `json:"txs"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MeanMs     float64 `json:"mean_ms"`
	MaxMs      float64 `json:"max_ms"`
	PollsPerTx float64 `json:"replica_pos_reads_per_tx"`
	// PrimaryReadP50Ms is the median time to read the primary's position
	// after COMMIT returned, a part of every sample.
	PrimaryReadP50Ms float64 `json:"primary_pos_read_p50_ms"`
	// IdlePollP50Ms is the median cost of one read of the replica's
	// position on an idle node: the resolution of the samples.
	IdlePollP50Ms float64   `json:"idle_replica_pos_read_p50_ms"`
	TargetP50Ms   float64   `json:"target_p50_ms"`
	TargetP99Ms   float64   `json:"target_p99_ms"`
	P50Result     string    `json:"p50_result"`
	P99Result     string    `json:"p99_result"`
	Anchor        string    `json:"litefs_anchor"`
	samples       []float64 // ms, in commit order
}

// catchUpResult is a fresh replica catching up on a large database.
type catchUpResult struct {
	MiB              int     `json:"requested_mib"`
	SizeBytes        int64   `json:"size_bytes"`
	BuildTxs         int     `json:"build_txs"`
	BuildSeconds     float64 `json:"build_seconds"`
	PrimaryPeakRSSKB int64   `json:"primary_peak_vmrss_kb"`
	PrimaryRSSResult string  `json:"primary_rss_result"`
	ReadySeconds     float64 `json:"mount_ready_seconds"`
	Seconds          float64 `json:"seconds"` // process start to matching position
	MiBPerSec        float64 `json:"mib_per_sec"`
	TargetMiBPerSec  float64 `json:"target_mib_per_sec"`
	Result           string  `json:"result"`
	Snapshot         bool    `json:"by_snapshot"`
	PeakRSSKB        int64   `json:"replica_peak_vmrss_kb"`
	RSSSamples       int     `json:"replica_rss_samples"`
	RSSResult        string  `json:"replica_rss_result"`
	Anchor           string  `json:"litefs_anchor"`
}

// replRun holds the nodes of the replication part.
type replRun struct {
	cfg         config
	bin         string
	dir         string
	plainDir    string
	logf        func(string, ...any)
	nodes       []*litefsProc // every node started, stopped in reverse order
	primary     *litefsProc
	primaryPort int
	replica     *litefsProc
}

// runReplication starts a primary (and replicas as needed) under
// work/repl, runs the selected parts and stops every node it started,
// also on error.
func runReplication(ctx context.Context, cfg config, parts replParts, bin, work, plainDir string,
	logf func(string, ...any)) (res *replResult, err error) {
	r := &replRun{cfg: cfg, bin: bin, dir: filepath.Join(work, "repl"), plainDir: plainDir, logf: logf}
	defer func() {
		if stopErr := r.stopAll(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	res = &replResult{Dir: r.dir}
	if r.primary, err = r.start(ctx, "primary", true, "", readyPoll); err != nil {
		return nil, err
	}
	res.PrimaryURL = r.primaryURL()
	if parts.lag || parts.sel {
		if r.replica, err = r.start(ctx, "replica", false, res.PrimaryURL, readyPoll); err != nil {
			return nil, err
		}
		sampler := newRSSSampler(r.replica.pid())
		peak, err := sampler.during(func() (err error) {
			if parts.lag {
				if res.Lag, err = r.measureLag(ctx); err != nil {
					return fmt.Errorf("repl-lag: %w", err)
				}
			}
			if parts.sel {
				if res.Select, err = r.measureSelect(ctx); err != nil {
					return fmt.Errorf("repl-select: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if peak > 0 {
			res.ReplicaPeakRSSKB, res.ReplicaRSSResult = peak, verdict(peak <= rssTargetKB)
		}
		// The catch-up measures a fresh replica alone: this one would
		// otherwise replicate the build and compete for disk and CPU.
		if err := r.stopNode(r.replica); err != nil {
			return nil, err
		}
	}
	if parts.catchUp {
		if res.CatchUp, err = r.measureCatchUp(ctx); err != nil {
			return nil, fmt.Errorf("repl-catchup: %w", err)
		}
	}
	return res, nil
}

func (r *replRun) primaryURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", r.primaryPort)
}

// start starts one node named name under r.dir.
func (r *replRun) start(ctx context.Context, name string, candidate bool, primary string, poll time.Duration) (*litefsProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	spec := nodeSpec{dir: filepath.Join(r.dir, name), hostname: name, port: port, candidate: candidate, primary: primary}
	if r.cfg.cpuProfileDir != "" {
		dir, err := filepath.Abs(r.cfg.cpuProfileDir)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			return nil, fmt.Errorf("-cpuprofile-dir: %w", err)
		}
		spec.env = []string{"LITEFS_CPUPROFILE=" + filepath.Join(dir, name+".pprof")}
	}
	if candidate {
		r.primaryPort = port
	}
	p, err := startNode(ctx, r.bin, spec, poll, r.logf)
	if err != nil {
		return nil, err
	}
	r.nodes = append(r.nodes, p)
	return p, nil
}

// stopNode stops one node early; a node that died by itself is an error.
func (r *replRun) stopNode(p *litefsProc) error {
	i := slices.Index(r.nodes, p)
	if i < 0 {
		return nil
	}
	r.nodes = slices.Delete(r.nodes, i, i+1)
	return p.stop(r.logf)
}

// stopAll stops replicas before the primary (reverse start order).
func (r *replRun) stopAll() error {
	var errs []error
	for i := len(r.nodes) - 1; i >= 0; i-- {
		errs = append(errs, r.nodes[i].stop(r.logf))
	}
	r.nodes = nil
	return errors.Join(errs...)
}

// posPath is the virtual file with db's position on node p.
func posPath(p *litefsProc, db string) string { return filepath.Join(p.mnt, db+"-pos") }

// readPos reads a <db>-pos file, without the trailing newline.
func readPos(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// waitPos polls node p's position of db until it equals want.
func (r *replRun) waitPos(ctx context.Context, p *litefsProc, db, want string, poll, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	path := posPath(p, db)
	for {
		got, err := readPos(path)
		if err == nil && got == want {
			return nil
		}
		if p.exitedNow() {
			return fmt.Errorf("%s exited (%v); log tail:\n%s", p, p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s is %q (%v) after %v, primary is at %s; log tail:\n%s",
				p, path, got, err, timeout, want, p.logTail())
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(poll)
	}
}

// waitCaughtUp waits until the replica has the primary's position of db.
func (r *replRun) waitCaughtUp(ctx context.Context, replica *litefsProc, db string) (string, error) {
	want, err := readPos(posPath(r.primary, db))
	if err != nil {
		return "", fmt.Errorf("primary position: %w", err)
	}
	return want, r.waitPos(ctx, replica, db, want, time.Millisecond, caughtUpTimeout)
}

// posReader reads one <db>-pos file with pread on a descriptor kept open,
// into a fixed buffer: the node computes the content on every read, so a
// poll costs one FUSE round trip and a tight loop does not allocate.
type posReader struct {
	path string
	fd   int
	buf  [64]byte
}

func newPosReader(path string) (*posReader, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	p := &posReader{path: path, fd: fd}
	_, err = p.read()
	return p, err
}

func (p *posReader) read() ([]byte, error) {
	n, err := syscall.Pread(p.fd, p.buf[:], 0)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: p.path, Err: err}
	}
	return p.buf[:max(n, 0)], nil
}

// close releases the descriptor.
func (p *posReader) close() { syscall.Close(p.fd) }

// measureLag commits single-row transactions on the primary one at a time
// and, after each, times how long until the replica shows the position the
// primary's <db>-pos gave right after COMMIT returned. The replica's
// position is read in a tight loop.
func (r *replRun) measureLag(ctx context.Context) (*lagResult, error) {
	const name = "lag.db"
	db, err := openDB(filepath.Join(r.primary.mnt, name), "WAL", "NORMAL")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st, err := newInsertStepper(ctx, db, r.cfg, workloadSeed(keyReplLag, 0))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if _, err := r.waitCaughtUp(ctx, r.replica, name); err != nil {
		return nil, err
	}
	ppos, err := newPosReader(posPath(r.primary, name))
	if err != nil {
		return nil, err
	}
	defer ppos.close()
	rpos, err := newPosReader(posPath(r.replica, name))
	if err != nil {
		return nil, err
	}
	defer rpos.close()

	// What one read of the replica's position costs on an idle node: the
	// resolution of the measurement.
	idle := make([]float64, 0, lagIdlePolls)
	for range lagIdlePolls {
		start := time.Now()
		if _, err := rpos.read(); err != nil {
			return nil, fmt.Errorf("replica position: %w", err)
		}
		idle = append(idle, msSince(start))
	}
	slices.Sort(idle)

	n := r.cfg.replN
	warm := min(lagWarmUpTxs, n)
	r.logf("repl-lag: %d single-row transactions (WAL, sync=NORMAL) after %d unmeasured, each waited for on the replica ...", n, warm)
	res := &lagResult{Txs: n, TargetP50Ms: lagP50TargetMs, TargetP99Ms: lagP99TargetMs,
		Anchor: "LiteFS p50 " + anchorLag50 + ", p99 " + anchorLag99, samples: make([]float64, 0, n),
		IdlePollP50Ms: percentile(idle, 50)}
	primaryReads := make([]float64, 0, n)
	var target []byte
	polls := 0
	for i := range warm + n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := st.step(ctx); err != nil {
			return nil, fmt.Errorf("tx %d: %w", i+1, err)
		}
		start := time.Now()
		pos, err := ppos.read()
		if err != nil {
			return nil, fmt.Errorf("tx %d: primary position: %w", i+1, err)
		}
		if i >= warm {
			primaryReads = append(primaryReads, msSince(start))
		}
		target = append(target[:0], pos...)
		for k := 0; ; k++ {
			got, err := rpos.read()
			if err != nil {
				return nil, fmt.Errorf("tx %d: replica position: %w", i+1, err)
			}
			if bytes.Equal(got, target) {
				if i >= warm {
					polls += k + 1
				}
				break
			}
			// Look up the clock and the process only now and then: the
			// loop should spend its time reading the position.
			if k%256 == 255 {
				if time.Since(start) > lagTxTimeout || r.replica.exitedNow() {
					fresh, ferr := readPos(posPath(r.replica, name))
					return nil, fmt.Errorf("tx %d: replica at %q (re-opened: %q %v), primary at %q after %v; replica log tail:\n%s",
						i+1, bytes.TrimSpace(got), fresh, ferr, bytes.TrimSpace(target), time.Since(start).Round(time.Millisecond), r.replica.logTail())
				}
			}
		}
		if i >= warm {
			res.samples = append(res.samples, msSince(start))
		}
	}
	res.summarize()
	slices.Sort(primaryReads)
	res.PrimaryReadP50Ms = percentile(primaryReads, 50)
	res.PollsPerTx = float64(polls) / float64(n)
	r.logf("repl-lag: p50 %.3f ms, p99 %.3f ms, mean %.3f ms, max %.3f ms (%.1f replica position reads per tx; "+
		"reading the primary's position after COMMIT took %.3f ms p50; one read of the replica's costs %.3f ms p50 when idle)",
		res.P50Ms, res.P99Ms, res.MeanMs, res.MaxMs, res.PollsPerTx, res.PrimaryReadP50Ms, res.IdlePollP50Ms)
	return res, nil
}

// summarize fills the statistics from the samples.
func (l *lagResult) summarize() {
	l.Txs = len(l.samples)
	if len(l.samples) == 0 {
		l.P50Result, l.P99Result = na, na
		return
	}
	s := slices.Clone(l.samples)
	slices.Sort(s)
	l.P50Ms, l.P99Ms, l.MaxMs = percentile(s, 50), percentile(s, 99), s[len(s)-1]
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	l.MeanMs = sum / float64(len(s))
	l.P50Result = verdict(l.P50Ms <= l.TargetP50Ms)
	l.P99Result = verdict(l.P99Ms <= l.TargetP99Ms)
}

// percentile is the nearest-rank p-th percentile of sorted s; 0 if empty.
func percentile(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	rank := int(float64(len(s))*p/100+0.999999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// measureSelect fills a table on the primary with the select workload's
// own fill, waits for the replica, copies the replica's database file to
// the plain dir and then runs the select workload's queries on the replica
// and on the copy, interleaved as the main workloads are.
func (r *replRun) measureSelect(ctx context.Context) (*resultRow, error) {
	const name = "select.db"
	w := workload{key: keyReplSelect, unit: "queries/s", target: replSelectTarget,
		name: fmt.Sprintf("point SELECT on a replica, %s rows, WAL", shortCount(r.cfg.selectRows))}
	r.logf("repl-select: filling %d rows on the primary ...", r.cfg.selectRows)
	err := withDB(filepath.Join(r.primary.mnt, name), "WAL", "NORMAL", func(db *sql.DB) error {
		st, err := newSelectStepper(ctx, db, r.cfg, workloadSeed(keyReplSelect, 0))
		if err != nil {
			return err
		}
		return st.Close()
	})
	if err != nil {
		return nil, err
	}
	pos, err := r.waitCaughtUp(ctx, r.replica, name)
	if err != nil {
		return nil, err
	}
	// The replica's WAL is always empty, so its database file is whole.
	plainPath := filepath.Join(r.plainDir, "repl-"+name)
	replPath := filepath.Join(r.replica.mnt, name)
	if err := copyFile(replPath, plainPath); err != nil {
		return nil, err
	}
	r.logf("repl-select: replica at %s; copied its %s to %s", pos, formatBytes(fileSize(plainPath)), plainPath)

	var dbs [2]*sql.DB
	defer func() {
		for _, db := range dbs {
			if db != nil {
				db.Close()
			}
		}
	}()
	for i, path := range [2]string{plainPath, replPath} {
		if dbs[i], err = openExistingDB(path, "wal"); err != nil {
			return nil, err
		}
	}
	b := &bencher{cfg: r.cfg, logf: r.logf}
	var plain, replica []float64
	for round := range r.cfg.rounds {
		seed := workloadSeed(keyReplSelect, round+1)
		var lanes [2]*lane
		for i, side := range [2]string{sidePlain, sideLitefs} {
			st, err := newSelectQuerier(dbs[i], r.cfg.selectRows, seed)
			if err != nil {
				closeSteppers(lanes)
				return nil, err
			}
			lanes[i] = &lane{side: side, path: []string{plainPath, replPath}[i], db: dbs[i], st: st,
				maxSteps: r.cfg.selectN, budget: r.cfg.duration}
		}
		err := b.interleave(ctx, lanes, round)
		if cerr := closeSteppers(lanes); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", round+1, err)
		}
		pl, rl := lanes[0], lanes[1]
		if pl.ops == 0 || rl.ops == 0 {
			return nil, fmt.Errorf("round %d: no queries completed", round+1)
		}
		plain, replica = append(plain, pl.rate()), append(replica, rl.rate())
		r.logf("%-12s round %d/%d: plain %s, replica %s %s, ratio %.2f (%d/%d ops in %v/%v)",
			w.key, round+1, r.cfg.rounds, formatRate(pl.rate()), formatRate(rl.rate()), w.unit, rl.rate()/pl.rate(),
			pl.ops, rl.ops, pl.elapsed.Round(time.Millisecond), rl.elapsed.Round(time.Millisecond))
	}
	for i, db := range dbs {
		dbs[i] = nil
		if err := db.Close(); err != nil {
			return nil, fmt.Errorf("close: %w", err)
		}
	}
	row := newResultRow(w, plain, replica)
	return &row, nil
}

func closeSteppers(lanes [2]*lane) error {
	var errs []error
	for _, l := range lanes {
		if l != nil {
			errs = append(errs, l.st.Close())
		}
	}
	return errors.Join(errs...)
}

// openExistingDB opens an existing database on one connection without
// changing it (a replica's is read-only), checking its journal mode.
func openExistingDB(path, journal string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", fmt.Sprintf("file:%s?_busy_timeout=%d", path, busyTimeout))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	var got string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&got); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal_mode of %s: %w", path, err)
	}
	if !strings.EqualFold(got, journal) {
		db.Close()
		return nil, fmt.Errorf("journal_mode of %s is %q, want %s", path, got, journal)
	}
	return db, nil
}

// copyFile copies src to a new file dst and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// measureCatchUp builds a large database on the primary in a few big
// transactions, then starts a fresh replica and times it from process start
// until its position equals the primary's, sampling its RSS meanwhile.
func (r *replRun) measureCatchUp(ctx context.Context) (*catchUpResult, error) {
	const name = "catchup.db"
	res := &catchUpResult{MiB: r.cfg.replDBMB, TargetMiBPerSec: catchUpTargetMiBps, Anchor: "LiteFS " + anchorCatchUp,
		Result: na, RSSResult: na, PrimaryRSSResult: na}
	rows := max(1, r.cfg.replDBMB<<20/catchUpPageEstimate)
	perTx := catchUpTxBytes / catchUpPageEstimate
	r.logf("repl-catchup: building a %d MiB database on the primary (%d rows of %d random bytes, %d rows per tx) ...",
		r.cfg.replDBMB, rows, catchUpRowBlob, perTx)
	start := time.Now()
	primaryRSS := newRSSSampler(r.primary.pid())
	peak, err := primaryRSS.during(func() error {
		return withDB(filepath.Join(r.primary.mnt, name), "WAL", "NORMAL", func(db *sql.DB) error {
			for left := rows; left > 0; left -= perTx {
				if err := ctx.Err(); err != nil {
					return err
				}
				n := min(left, perTx)
				if _, err := db.Exec(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < ?)
					INSERT INTO t(v) SELECT randomblob(?) FROM s`, n, catchUpRowBlob); err != nil {
					return fmt.Errorf("build tx %d: %w", res.BuildTxs+1, err)
				}
				res.BuildTxs++
			}
			return db.QueryRow(`SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&res.SizeBytes)
		})
	})
	if err != nil {
		return nil, err
	}
	res.BuildSeconds = time.Since(start).Seconds()
	if peak > 0 {
		res.PrimaryPeakRSSKB, res.PrimaryRSSResult = peak, verdict(peak <= rssTargetKB)
	}
	want, err := readPos(posPath(r.primary, name))
	if err != nil {
		return nil, fmt.Errorf("primary position: %w", err)
	}
	r.logf("repl-catchup: built %s in %.1fs (%d tx), primary at %s, primary peak RSS %s; starting a fresh replica ...",
		formatBytes(res.SizeBytes), res.BuildSeconds, res.BuildTxs, want, formatKBPtr(nonZero(peak)))

	fresh, err := r.start(ctx, "fresh-replica", false, r.primaryURL(), catchUpPoll)
	if err != nil {
		return nil, err
	}
	ready := time.Since(fresh.started)
	sampler := newRSSSampler(fresh.pid())
	var elapsed time.Duration
	timeout := caughtUpTimeout + time.Duration(r.cfg.replDBMB)*200*time.Millisecond // 5 MiB/s at worst
	peak, err = sampler.during(func() error {
		if err := r.waitPos(ctx, fresh, name, want, catchUpPoll, timeout); err != nil {
			return err
		}
		elapsed = time.Since(fresh.started)
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.ReadySeconds, res.Seconds = ready.Seconds(), elapsed.Seconds()
	res.MiBPerSec = float64(res.SizeBytes) / (1 << 20) / elapsed.Seconds()
	res.Result = verdict(res.MiBPerSec >= catchUpTargetMiBps)
	_, res.RSSSamples, _ = sampler.result()
	if peak > 0 {
		res.PeakRSSKB, res.RSSResult = peak, verdict(peak <= rssTargetKB)
	}
	r.logf("repl-catchup: fresh replica caught up on %s in %.3fs from process start (mount ready after %.3fs): %.0f MiB/s, peak RSS %s",
		formatBytes(res.SizeBytes), res.Seconds, res.ReadySeconds, res.MiBPerSec, formatKBPtr(nonZero(peak)))
	// The log line may land after the position: read it once stopped.
	err = r.stopNode(fresh)
	res.Snapshot = strings.Contains(readAll(fresh.logPath), "applied snapshot")
	return res, err
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Nanoseconds()) / 1e6 }

func readAll(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// writeMarkdown prints the replication table.
func (r *replResult) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Replication: a static primary and replicas, each a real litefs process with its own mount, "+
		"streaming over loopback HTTP (scratch dir %s). LiteFS anchors are superfly/litefs on this machine.\n\n", r.Dir)
	fmt.Fprintln(w, "| replication | measured | target | result | LiteFS anchor | detail |")
	fmt.Fprintln(w, "|---|---:|---|---|---|---|")
	rss := "<= " + formatKB(rssTargetKB)
	if l := r.Lag; l != nil {
		what := fmt.Sprintf("commit-to-visible lag on a replica, %%s (%d single-row tx, WAL, sync=NORMAL)", l.Txs)
		fmt.Fprintf(w, "| %s | %.3f ms | <= %.1f ms | %s | %s | from COMMIT returning on the primary until the replica's <db>-pos equals the primary's (read right after COMMIT: %.3f ms p50), "+
			"polled in a tight loop (%.1f reads/tx, %.3f ms per read when idle); mean %.3f ms, max %.3f ms |\n",
			fmt.Sprintf(what, "p50"), l.P50Ms, l.TargetP50Ms, l.P50Result, anchorLag50, l.PrimaryReadP50Ms, l.PollsPerTx, l.IdlePollP50Ms, l.MeanMs, l.MaxMs)
		fmt.Fprintf(w, "| %s | %.3f ms | <= %.1f ms | %s | %s | |\n",
			fmt.Sprintf(what, "p99"), l.P99Ms, l.TargetP99Ms, l.P99Result, anchorLag99)
	}
	if s := r.Select; s != nil {
		fmt.Fprintf(w, "| %s (queries/s), replica/plain | %s | >= %.2f | %s | %s | plain copy %s, replica %s queries/s; median of %d %s, spread %.0f%% |\n",
			s.Name, formatRatio(s.Ratio), s.Target, s.Result, anchorReplSelect,
			formatRate(s.Plain.Median), formatRate(s.Litefs.Median), len(s.RoundRatios), plural(len(s.RoundRatios), "round"), 100*max(s.Plain.spread(), s.Litefs.spread()))
	}
	if r.ReplicaRSSResult != "" {
		fmt.Fprintf(w, "| replica peak RSS during the above (VmRSS every %v) | %s | %s | %s | | |\n",
			rssInterval, formatKB(r.ReplicaPeakRSSKB), rss, r.ReplicaRSSResult)
	}
	if c := r.CatchUp; c != nil {
		how := "by LTX files"
		if c.Snapshot {
			how = "by snapshot"
		}
		fmt.Fprintf(w, "| catch-up of a fresh replica on a %s db | %.0f MiB/s | >= %d MiB/s | %s | %s | %.3f s from process start to matching <db>-pos (mount ready after %.3f s), %s |\n",
			formatBytes(c.SizeBytes), c.MiBPerSec, catchUpTargetMiBps, c.Result, anchorCatchUp, c.Seconds, c.ReadySeconds, how)
		fmt.Fprintf(w, "| fresh replica peak RSS during catch-up (VmRSS every %v) | %s | %s | %s | | %d samples |\n",
			rssInterval, formatKBPtr(nonZero(c.PeakRSSKB)), rss, c.RSSResult, c.RSSSamples)
		fmt.Fprintf(w, "| primary peak RSS building that db | %s | %s | %s | | %d tx of up to %d MiB in %.1f s |\n",
			formatKBPtr(nonZero(c.PrimaryPeakRSSKB)), rss, c.PrimaryRSSResult, c.BuildTxs, catchUpTxBytes>>20, c.BuildSeconds)
	}
	fmt.Fprintln(w)
}
