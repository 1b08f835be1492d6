// Package store keeps the replicated state of every database on a node: its
// position (TXID and rolling checksum) and its history of LTX files. It knows
// nothing about FUSE; the capture layer hands it finished transactions.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Config holds the store settings that come from the node's configuration.
type Config struct {
	// Dir is data.dir. Databases live under Dir/files, history under Dir/ltx.
	Dir string
	// Retention is how long LTX files are kept; the latest is always kept.
	Retention time.Duration
	// RetentionInterval is how often old LTX files are removed.
	RetentionInterval time.Duration
	// SkipSync turns off fsync of LTX files (tests and benchmarks only).
	SkipSync bool
	// NodeID is recorded in every LTX file this node writes.
	NodeID uint64
	// ResyncOnMismatch makes a database whose file matches no position in its
	// history start over at position zero (a replica then receives a
	// snapshot) instead of stopping the node. Replicas set it: their data is
	// a copy, and the primary has the authoritative one.
	ResyncOnMismatch bool
	Logger           *slog.Logger
}

// Store is the set of databases on a node.
type Store struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	dbs     map[string]*DB
	changed chan struct{} // closed and replaced on every change; see Changed
	guard   ApplyGuard

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// FilesDir is where the mount's files are stored on disk.
func (c Config) FilesDir() string { return filepath.Join(c.Dir, "files") }

func (c Config) ltxRoot() string { return filepath.Join(c.Dir, "ltx") }

// Open loads every database's position from its LTX history, recovers the
// database files to match it (see Recover), and starts the retention loop.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{cfg: cfg, log: cfg.Logger, dbs: map[string]*DB{}, changed: make(chan struct{})}
	_ = os.RemoveAll(s.tmpDir()) // partial snapshots of an earlier run
	for _, dir := range []string{cfg.FilesDir(), cfg.ltxRoot(), s.tmpDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := s.recoverAll(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if cfg.Retention > 0 && cfg.RetentionInterval > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.retentionLoop(ctx) }()
	}
	return s, nil
}

// Close stops background work. Databases stay usable for reads of position.
func (s *Store) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return nil
}

// Path returns the on-disk path of a database file given its name in the mount.
func (s *Store) Path(name string) string {
	return filepath.Join(s.cfg.FilesDir(), filepath.FromSlash(name))
}

// DB returns the database with the given name, or nil.
func (s *Store) DB(name string) *DB {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dbs[name]
}

// DBs returns all databases sorted by name.
func (s *Store) DBs() []*DB {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*DB, 0, len(s.dbs))
	for _, db := range s.dbs {
		out = append(out, db)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// CreateDB returns the database called name, creating its (empty) history if
// it does not exist yet.
func (s *Store) CreateDB(name string) (*DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if db := s.dbs[name]; db != nil {
		return db, nil
	}
	db := s.newDB(name)
	if err := db.createHistoryDir(); err != nil {
		return nil, fmt.Errorf("create db %s: %w", name, err)
	}
	s.dbs[name] = db
	s.notifyLocked()
	return db, nil
}

// RemoveDB forgets a database and deletes its history, after its file was
// deleted from the mount.
func (s *Store) RemoveDB(name string) error {
	s.mu.Lock()
	db := s.dbs[name]
	delete(s.dbs, name)
	if db != nil {
		s.notifyLocked()
	}
	s.mu.Unlock()
	if db == nil {
		return nil
	}
	db.closeFile()
	if err := os.RemoveAll(db.ltxDir); err != nil {
		return fmt.Errorf("remove db %s history: %w", name, err)
	}
	return nil
}

// RenameDB moves a database's history when its file is renamed in the mount.
// A database that was at newName is replaced, as the rename replaced its file.
func (s *Store) RenameDB(oldName, newName string) error {
	if err := s.RemoveDB(newName); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	db := s.dbs[oldName]
	if db == nil {
		return nil
	}
	moved := s.newDB(newName)
	if err := os.Rename(db.ltxDir, moved.ltxDir); err != nil {
		return fmt.Errorf("rename db %s to %s: %w", oldName, newName, err)
	}
	if err := moved.writeNameFile(); err != nil {
		return fmt.Errorf("rename db %s to %s: %w", oldName, newName, err)
	}
	db.mu.Lock()
	moved.pos, moved.pageSize, moved.commit, moved.syncedTo = db.pos, db.pageSize, db.commit, db.syncedTo
	db.mu.Unlock()
	db.closeFile()
	delete(s.dbs, oldName)
	s.dbs[newName] = moved
	s.notifyLocked()
	return nil
}

func (s *Store) newDB(name string) *DB {
	return &DB{
		name:   name,
		ltxDir: filepath.Join(s.cfg.ltxRoot(), historyDirName(name)),
		sync:   !s.cfg.SkipSync,
		nodeID: s.cfg.NodeID,
		notify: s.notify,
	}
}

// SkipSync reports whether fsync of LTX files is turned off.
func (s *Store) SkipSync() bool { return s.cfg.SkipSync }

// nameFile inside a history directory holds the database's name, because the
// directory name is only an escaped (and, for long names, shortened) form.
const nameFile = "name"

// historyDirName maps a database name (a relative path of up to the
// filesystem's limits) to one directory name that fits in 255 bytes.
func historyDirName(name string) string {
	esc := url.PathEscape(name)
	if len(esc) <= 200 {
		return esc
	}
	sum := sha256.Sum256([]byte(name))
	return esc[:120] + "~" + hex.EncodeToString(sum[:16])
}

func (db *DB) createHistoryDir() error {
	if err := os.MkdirAll(db.ltxDir, 0o755); err != nil {
		return err
	}
	return db.writeNameFile()
}

func (db *DB) writeNameFile() error {
	return os.WriteFile(filepath.Join(db.ltxDir, nameFile), []byte(db.name), 0o644)
}

// readNameFile returns the database name recorded in a history directory.
func readNameFile(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, nameFile))
	if err != nil {
		return "", err
	}
	return string(b), nil
}
