package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	_ "github.com/mattn/go-sqlite3"
)

const (
	payloadSize = 100
	busyTimeout = 5000 // ms; only one connection writes, so this is a safety net
	schema      = `CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`
)

// workload is one row of the report: a database mode plus a step that is
// repeated and timed.
type workload struct {
	key     string  // for -only and JSON
	name    string  // table label
	unit    string  // what a step's count means: "ops/s", "rows/s", "queries/s"
	target  float64 // minimum litefs/plain ratio
	journal string  // journal_mode
	sync    string  // synchronous
	// newStepper does untimed setup on a fresh database (schema exists).
	newStepper func(ctx context.Context, db *sql.DB, cfg config, seed uint64) (stepper, error)
	// maxSteps caps the steps of one side in one round.
	maxSteps func(cfg config) int
}

// stepper performs one timed unit of a workload (one transaction or one
// query) and returns how many ops (rows, queries) it completed. Keeping the
// state between steps lets the two sides take turns in short slices.
type stepper interface {
	step(ctx context.Context) (int, error)
	Close() error
}

// allWorkloads lists the workloads; cfg only shapes the labels.
func allWorkloads(cfg config) []workload {
	batch := fmt.Sprintf("%d-row tx", cfg.batchRows)
	sel := fmt.Sprintf("point SELECT, %s rows, WAL", shortCount(cfg.selectRows))
	return []workload{
		{key: "wal-normal", name: "single-row tx, WAL, sync=NORMAL", unit: "ops/s", target: 0.25,
			journal: "WAL", sync: "NORMAL", newStepper: newInsertStepper, maxSteps: singleSteps},
		{key: "wal-full", name: "single-row tx, WAL, sync=FULL", unit: "ops/s", target: 0.5,
			journal: "WAL", sync: "FULL", newStepper: newInsertStepper, maxSteps: singleSteps},
		{key: "delete", name: "single-row tx, DELETE journal, sync=FULL", unit: "ops/s", target: 0.7,
			journal: "DELETE", sync: "FULL", newStepper: newInsertStepper, maxSteps: singleSteps},
		{key: "batch-wal", name: batch + ", WAL, sync=NORMAL", unit: "rows/s", target: 0.7,
			journal: "WAL", sync: "NORMAL", newStepper: newBatchStepper, maxSteps: batchSteps},
		{key: "batch-delete", name: batch + ", DELETE journal, sync=FULL", unit: "rows/s", target: 0.7,
			journal: "DELETE", sync: "FULL", newStepper: newBatchStepper, maxSteps: batchSteps},
		{key: "select", name: sel, unit: "queries/s", target: 0.5,
			journal: "WAL", sync: "NORMAL", newStepper: newSelectStepper, maxSteps: selectSteps},
	}
}

func workloadKeys() []string {
	var keys []string
	for _, w := range allWorkloads(config{}) {
		keys = append(keys, w.key)
	}
	return keys
}

// shortCount writes 100000 as "100k" and 2000000 as "2M" for labels.
func shortCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// selectWorkloads resolves -only for the main workloads; an empty list
// means all of them. Replication keys are skipped here.
func selectWorkloads(cfg config) ([]workload, error) {
	all := allWorkloads(cfg)
	only := cfg.only
	if strings.TrimSpace(only) == "" {
		return all, nil
	}
	byKey := make(map[string]workload, len(all))
	for _, w := range all {
		byKey[w.key] = w
	}
	var out []workload
	for _, k := range strings.Split(only, ",") {
		k = strings.TrimSpace(k)
		if slices.Contains(replKeys(), k) {
			continue // the replication part's, see selectRepl
		}
		w, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("-only: unknown key %q (have %s)", k, strings.Join(allKeys(), ","))
		}
		out = append(out, w)
	}
	return out, nil
}

// allKeys lists the workload keys and then the replication keys.
func allKeys() []string { return append(workloadKeys(), replKeys()...) }

// openDB opens path on a single persistent connection in the given modes.
// One connection keeps the page cache and prepared statements alive across
// ops, as an application would, and makes per-connection PRAGMAs stick.
func openDB(path, journal, sync string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", fmt.Sprintf("%s?_busy_timeout=%d", path, busyTimeout))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	// journal_mode answers with the mode in effect; a filesystem that
	// cannot do WAL makes SQLite keep the old mode instead of failing,
	// which would silently benchmark the wrong thing.
	var got string
	if err := db.QueryRow("PRAGMA journal_mode=" + journal).Scan(&got); err != nil {
		db.Close()
		return nil, fmt.Errorf("set journal_mode=%s on %s: %w", journal, path, err)
	}
	if !strings.EqualFold(got, journal) {
		db.Close()
		return nil, fmt.Errorf("set journal_mode=%s on %s: got %q", journal, path, got)
	}
	if _, err := db.Exec("PRAGMA synchronous=" + sync); err != nil {
		db.Close()
		return nil, fmt.Errorf("set synchronous=%s on %s: %w", sync, path, err)
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create table in %s: %w", path, err)
	}
	return db, nil
}

// payloadSource yields incompressible row payloads, so neither side gains
// from compression (LTX files may be compressed).
type payloadSource struct {
	rng *rand.ChaCha8
	buf []byte
}

func newPayloadSource(seed uint64, size int) *payloadSource {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &payloadSource{rng: rand.NewChaCha8(s), buf: make([]byte, size)}
}

// next returns fresh random bytes; the buffer is reused, which is safe
// because the driver copies blob arguments before Exec returns.
func (p *payloadSource) next() []byte {
	_, _ = p.rng.Read(p.buf) // ChaCha8.Read never fails
	return p.buf
}

func singleSteps(cfg config) int { return cfg.n }
func batchSteps(cfg config) int  { return cfg.batchN }
func selectSteps(cfg config) int { return cfg.selectN }

// The steps call Exec without a context on purpose: with a cancellable
// context the driver starts a watcher goroutine per statement, an overhead
// that would dilute the filesystem cost being measured. The caller checks
// ctx between steps instead.

// insertStepper commits one row per transaction. Autocommit is exactly
// BEGIN/INSERT/COMMIT in SQLite, without two extra driver round trips.
type insertStepper struct {
	stmt *sql.Stmt
	src  *payloadSource
}

func newInsertStepper(_ context.Context, db *sql.DB, _ config, seed uint64) (stepper, error) {
	stmt, err := db.Prepare(`INSERT INTO t(v) VALUES(?)`)
	if err != nil {
		return nil, fmt.Errorf("prepare insert: %w", err)
	}
	return &insertStepper{stmt: stmt, src: newPayloadSource(seed, payloadSize)}, nil
}

func (s *insertStepper) step(context.Context) (int, error) {
	if _, err := s.stmt.Exec(s.src.next()); err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	return 1, nil
}

func (s *insertStepper) Close() error { return s.stmt.Close() }

// batchStepper commits cfg.batchRows rows per transaction; ops are rows.
type batchStepper struct {
	insertStepper
	db   *sql.DB
	rows int
}

func newBatchStepper(ctx context.Context, db *sql.DB, cfg config, seed uint64) (stepper, error) {
	ins, err := newInsertStepper(ctx, db, cfg, seed)
	if err != nil {
		return nil, err
	}
	return &batchStepper{insertStepper: *ins.(*insertStepper), db: db, rows: cfg.batchRows}, nil
}

func (s *batchStepper) step(ctx context.Context) (int, error) {
	if err := insertTx(ctx, s.db, s.stmt, s.src, s.rows); err != nil {
		return 0, err
	}
	return s.rows, nil
}

// insertTx inserts n rows with stmt in one transaction; ^C rolls it back.
func insertTx(ctx context.Context, db *sql.DB, stmt *sql.Stmt, src *payloadSource, n int) error {
	tx, err := db.Begin()
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// tx.Stmt reuses the statement already prepared on this connection.
	ts := tx.Stmt(stmt)
	for i := range n {
		if i%1024 == 0 && ctx.Err() != nil {
			_ = tx.Rollback()
			return ctx.Err()
		}
		if _, err := ts.Exec(src.next()); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("insert row %d: %w", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// selectStepper looks up one random id per step. Both sides of a round
// get the same seed and so the same table contents and id sequence.
type selectStepper struct {
	stmt *sql.Stmt
	rng  *rand.Rand
	rows int
	v    []byte
}

// newSelectStepper first fills the table in one (untimed) transaction.
func newSelectStepper(ctx context.Context, db *sql.DB, cfg config, seed uint64) (stepper, error) {
	ins, err := db.Prepare(`INSERT INTO t(v) VALUES(?)`)
	if err != nil {
		return nil, fmt.Errorf("prepare insert: %w", err)
	}
	err = insertTx(ctx, db, ins, newPayloadSource(seed, payloadSize), cfg.selectRows)
	ins.Close()
	if err != nil {
		return nil, fmt.Errorf("fill %d rows: %w", cfg.selectRows, err)
	}
	return newSelectQuerier(db, cfg.selectRows, seed)
}

// newSelectQuerier is the timed part of the select workload on a table
// that already holds rows 1..rows (written by newSelectStepper's fill).
func newSelectQuerier(db *sql.DB, rows int, seed uint64) (stepper, error) {
	stmt, err := db.Prepare(`SELECT v FROM t WHERE id=?`)
	if err != nil {
		return nil, fmt.Errorf("prepare select: %w", err)
	}
	return &selectStepper{stmt: stmt, rng: rand.New(rand.NewPCG(seed, 0)), rows: rows}, nil
}

func (s *selectStepper) step(context.Context) (int, error) {
	id := s.rng.IntN(s.rows) + 1
	if err := s.stmt.QueryRow(id).Scan(&s.v); err != nil {
		return 0, fmt.Errorf("select id %d: %w", id, err)
	}
	if len(s.v) != payloadSize {
		return 0, fmt.Errorf("select id %d: got %d bytes, want %d", id, len(s.v), payloadSize)
	}
	return 1, nil
}

func (s *selectStepper) Close() error { return s.stmt.Close() }
