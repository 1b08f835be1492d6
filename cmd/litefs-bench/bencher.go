package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"time"
)

const (
	warmUpOps  = 200
	bigRowSize = 1000 // bytes per row of the -rss-db-mb database
)

// bencher runs workloads on both sides.
type bencher struct {
	cfg      config
	plainDir string
	mountDir string
	sampler  *rssSampler
	logf     func(string, ...any)
	onCreate func(side, path string) // told about every database file made
}

// roundOrder alternates which side goes first (ABBA...), so that a trend
// such as the disk filling its write cache does not favour one side.
func roundOrder(turn int) [2]string {
	if turn%2 == 0 {
		return [2]string{sidePlain, sideLitefs}
	}
	return [2]string{sideLitefs, sidePlain}
}

// workloadSeed is shared by both sides of a round so that they write the
// same bytes and query the same ids, but differs between rounds.
func workloadSeed(key string, round int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64() + uint64(round)
}

func (b *bencher) dirFor(side string) string {
	if side == sideLitefs {
		return b.mountDir
	}
	return b.plainDir
}

// newDBPath names a fresh database file, refusing leftovers: reusing one
// would measure a different (larger, pre-cached) database.
func (b *bencher) newDBPath(side, name string) (string, error) {
	path := filepath.Join(b.dirFor(side), name)
	if _, err := os.Lstat(path); err == nil {
		return "", fmt.Errorf("%s already exists; remove leftovers of an earlier run", path)
	}
	b.onCreate(side, path)
	return path, nil
}

// lane is one side's database within a round, with its running totals.
type lane struct {
	side     string
	path     string
	db       *sql.DB
	st       stepper
	maxSteps int
	budget   time.Duration

	steps   int
	ops     int
	elapsed time.Duration // time spent inside steps only
}

// openLane creates a fresh database on side and runs w's untimed setup.
func (b *bencher) openLane(ctx context.Context, w workload, side, name string, seed uint64) (*lane, error) {
	path, err := b.newDBPath(side, name)
	if err != nil {
		return nil, err
	}
	db, err := openDB(path, w.journal, w.sync)
	if err != nil {
		return nil, err
	}
	st, err := w.newStepper(ctx, db, b.cfg, seed)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("set up %s: %w", path, err)
	}
	return &lane{side: side, path: path, db: db, st: st, maxSteps: w.maxSteps(b.cfg), budget: b.cfg.duration}, nil
}

func (l *lane) done() bool {
	return l.steps >= l.maxSteps || l.elapsed >= l.budget
}

// runSlice steps for up to slice (bounded by what is left of the budget).
func (l *lane) runSlice(ctx context.Context, slice time.Duration) error {
	start := time.Now()
	end := start.Add(min(slice, l.budget-l.elapsed))
	defer func() { l.elapsed += time.Since(start) }()
	for l.steps < l.maxSteps && time.Now().Before(end) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := l.st.step(ctx)
		if err != nil {
			return fmt.Errorf("step %d: %w", l.steps+1, err)
		}
		l.ops += n
		l.steps++
	}
	return nil
}

func (l *lane) rate() float64 {
	if l.ops == 0 || l.elapsed <= 0 {
		return 0
	}
	return float64(l.ops) / l.elapsed.Seconds()
}

// close closes the stepper and the database, reporting a failed close:
// for litefs, close is where the last WAL frames may be checkpointed.
func (l *lane) close() error {
	if l == nil {
		return nil
	}
	err := l.st.Close()
	if cerr := l.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close %s: %w", l.path, cerr))
	}
	return err
}

// warmUp touches both sides once, unmeasured, so that the first measured
// round does not pay for cold caches, lazy initialisation or cgo start-up.
func (b *bencher) warmUp(ctx context.Context) error {
	w := allWorkloads(b.cfg)[0]
	w.maxSteps = func(config) int { return warmUpOps }
	_, err := b.sampler.during(func() error {
		_, err := b.round(ctx, w, "warmup.db", 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return nil
}

// compare runs w for cfg.rounds rounds. RSS is sampled throughout: the
// sides take turns, so every round is a litefs run.
func (b *bencher) compare(ctx context.Context, w workload) (resultRow, error) {
	var plain, litefs []float64
	for r := range b.cfg.rounds {
		var lanes [2]*lane
		_, err := b.sampler.during(func() (err error) {
			lanes, err = b.round(ctx, w, fmt.Sprintf("%s-r%d.db", w.key, r+1), r)
			return err
		})
		if err != nil {
			return resultRow{}, fmt.Errorf("%s, round %d: %w", w.key, r+1, err)
		}
		pl, li := lanes[laneIndex(sidePlain)], lanes[laneIndex(sideLitefs)]
		for _, l := range lanes {
			if l.ops == 0 {
				return resultRow{}, fmt.Errorf("%s, round %d, %s: no operations completed", w.key, r+1, l.side)
			}
		}
		plain, litefs = append(plain, pl.rate()), append(litefs, li.rate())
		b.logf("%-12s round %d/%d: plain %s, litefs %s %s, ratio %.2f (%d/%d ops in %v/%v)",
			w.key, r+1, b.cfg.rounds, formatRate(pl.rate()), formatRate(li.rate()), w.unit, li.rate()/pl.rate(),
			pl.ops, li.ops, pl.elapsed.Round(time.Millisecond), li.elapsed.Round(time.Millisecond))
	}
	return newResultRow(w, plain, litefs), nil
}

// round runs w on a fresh database per side, the sides taking turns in
// slices of cfg.slice until each has used its time or step budget. Short
// alternating slices make both sides see the same machine: a noisy
// neighbour or a slow fsync spell lands on both instead of skewing one.
// Setup and close are not timed. The lanes are returned closed.
func (b *bencher) round(ctx context.Context, w workload, name string, r int) (lanes [2]*lane, err error) {
	defer func() {
		for _, l := range lanes {
			err = errors.Join(err, l.close())
		}
	}()
	seed := workloadSeed(w.key, r)
	for i, side := range [2]string{sidePlain, sideLitefs} {
		if lanes[i], err = b.openLane(ctx, w, side, name, seed); err != nil {
			return lanes, err
		}
	}
	return lanes, b.interleave(ctx, lanes, r)
}

// interleave runs two open lanes (plain first) in turns of cfg.slice until
// each has used its time or step budget. Starting at turn r alternates the
// first side between rounds, and within a round the order is ABBA..., so
// neither side always runs right after the other's writes.
func (b *bencher) interleave(ctx context.Context, lanes [2]*lane, r int) error {
	for turn := r; !lanes[0].done() || !lanes[1].done(); turn++ {
		for _, side := range roundOrder(turn) {
			if l := lanes[laneIndex(side)]; !l.done() {
				if err := l.runSlice(ctx, b.cfg.slice); err != nil {
					return fmt.Errorf("%s: %w", l.side, err)
				}
			}
		}
	}
	return nil
}

// laneIndex is a side's index in a round's lanes.
func laneIndex(side string) int {
	if side == sidePlain {
		return 0
	}
	return 1
}

// buildLargeDB writes an mb MiB database in a single transaction on the
// mount and reports litefs's peak RSS meanwhile: litefs must stream large
// transactions instead of holding them in memory.
func (b *bencher) buildLargeDB(ctx context.Context, mb int) (*bigDBResult, error) {
	path, err := b.newDBPath(sideLitefs, "rss-big.db")
	if err != nil {
		return nil, err
	}
	rows := mb << 20 / bigRowSize
	b.logf("building %d MiB database (%d rows of %d bytes, one transaction) on the mount ...", mb, rows, bigRowSize)
	start := time.Now()
	peak, err := b.sampler.during(func() error {
		return withDB(path, "WAL", "NORMAL", func(db *sql.DB) error {
			stmt, err := db.Prepare(`INSERT INTO t(v) VALUES(?)`)
			if err != nil {
				return fmt.Errorf("prepare insert: %w", err)
			}
			defer stmt.Close()
			return insertTx(ctx, db, stmt, newPayloadSource(2, bigRowSize), rows)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("build %d MiB database: %w", mb, err)
	}
	res := &bigDBResult{MiB: mb, Rows: rows, Seconds: time.Since(start).Seconds(),
		SizeBytes: fileSize(path) + fileSize(path+"-wal"), PeakRSSKB: peak}
	b.logf("built %s in %.1fs, litefs peak RSS %s", formatBytes(res.SizeBytes), res.Seconds, formatKBPtr(nonZero(peak)))
	return res, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// withDB opens a fresh database, runs fn on it and closes it, reporting a
// failed close: for litefs, close is where the last WAL frames may land.
func withDB(path, journal, sync string, fn func(*sql.DB) error) error {
	db, err := openDB(path, journal, sync)
	if err != nil {
		return err
	}
	err = fn(db)
	if cerr := db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", path, cerr)
	}
	return err
}
