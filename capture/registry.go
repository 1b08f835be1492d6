// Package capture watches the file operations SQLite makes on a database and
// its rollback journal or WAL, finds the commit points, and hands each
// committed transaction's changed pages to the store as one LTX file.
//
// The filesystem routes every write to a database, journal or WAL file
// through a capture DB so that the capture sees the old contents of a page
// before it is overwritten and can order its own LTX write before the
// operation that makes SQLite's commit durable.
package capture

import (
	"log/slog"
	"sync"

	"github.com/replfs/litefs/store"
)

// Registry holds one capture DB per database name.
type Registry struct {
	store  *store.Store
	log    *slog.Logger
	verify bool

	mu  sync.Mutex
	dbs map[string]*DB
}

// Options configure a Registry.
type Options struct {
	Logger *slog.Logger
	// Verify recomputes the whole database checksum after every commit and
	// compares it with the rolling checksum. Slow; for tests.
	Verify bool
}

// NewRegistry returns a registry committing into st.
func NewRegistry(st *store.Store, opts Options) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{store: st, log: opts.Logger, verify: opts.Verify, dbs: map[string]*DB{}}
}

// DB returns the capture state for the database called name (its path
// relative to the mount root), creating it on first use.
func (r *Registry) DB(name string) *DB {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dbs[name]
	if d == nil {
		d = &DB{reg: r, name: name}
		r.dbs[name] = d
	}
	return d
}

// Remove forgets a database whose file was deleted from the mount.
func (r *Registry) Remove(name string) error {
	r.mu.Lock()
	d := r.dbs[name]
	delete(r.dbs, name)
	r.mu.Unlock()
	if d != nil {
		d.mu.Lock()
		d.reset()
		d.mu.Unlock()
	}
	return r.store.RemoveDB(name)
}

// Rename moves capture state and history when a database file is renamed.
func (r *Registry) Rename(oldName, newName string) error {
	r.mu.Lock()
	d := r.dbs[oldName]
	old := r.dbs[newName]
	delete(r.dbs, oldName)
	delete(r.dbs, newName)
	if d != nil {
		d.mu.Lock()
		d.name = newName
		d.reset()
		d.mu.Unlock()
		r.dbs[newName] = d
	}
	r.mu.Unlock()
	if old != nil {
		old.mu.Lock()
		old.reset()
		old.mu.Unlock()
	}
	return r.store.RenameDB(oldName, newName)
}

// Reset forgets every database's capture state, when this node becomes the
// primary after applying other nodes' transactions.
func (r *Registry) Reset() {
	r.mu.Lock()
	dbs := r.dbs
	r.dbs = map[string]*DB{}
	r.mu.Unlock()
	for _, d := range dbs {
		d.mu.Lock()
		d.reset()
		d.mu.Unlock()
	}
}
