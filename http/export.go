package http

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mattn/go-sqlite3"
	"github.com/replfs/litefs/ltx"
	"github.com/replfs/litefs/store"
)

// maxImportSize bounds an uploaded database (it is spooled to disk).
const maxImportSize = 64 << 30

// handleExport serves GET /export?name=DB: a consistent image of the
// database at one position, byte for byte, with that position in the
// Litefs-Pos header.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if err := ValidateName(name); err != nil {
		s.httpError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if db := s.cfg.Store.DB(name); db == nil || db.Pos().TXID == 0 {
		s.httpError(w, r, http.StatusNotFound, "database %q not found", name)
		return
	}
	tmp, err := os.CreateTemp(s.cfg.Store.TmpDir(), "export-*")
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, "export %s: %v", name, err)
		return
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	var pos, size string
	if s.cfg.Node.IsPrimary() {
		info, err := s.cfg.Snapshot.Snapshot(r.Context(), name, tmp)
		if err != nil {
			s.httpError(w, r, http.StatusInternalServerError, "export %s: %v", name, err)
			return
		}
		pos, size = info.Pos.String(), strconv.FormatInt(int64(info.PageSize)*int64(info.Commit), 10)
	} else {
		sp, err := s.cfg.Store.SnapshotApplied(name, tmp)
		if err != nil {
			s.httpError(w, r, http.StatusInternalServerError, "export %s: %v", name, err)
			return
		}
		pos, size = fmt.Sprintf("%s/%s", sp.TXID, sp.Checksum), strconv.FormatInt(int64(sp.PageSize)*int64(sp.Commit), 10)
	}
	w.Header().Set(headerPos, pos)
	w.Header().Set("Content-Type", "application/vnd.sqlite3")
	w.Header().Set("Content-Length", size)
	if _, err := io.Copy(w, tmp); err != nil {
		s.log.Info("export interrupted", "db", name, "err", err)
	}
}

// handleImport serves POST /import?name=DB on the primary: the body, once
// checked to be a sound SQLite database, replaces the database's contents.
// The copy goes through SQLite's backup API on the mount, so it is one
// ordinary transaction to readers, writers and replicas.
func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if err := ValidateName(name); err != nil {
		s.httpError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if store.IsHelperFile(name) {
		// SQLite would take the imported file for another database's
		// journal or WAL (a bogus hot journal makes that database unreadable).
		s.httpError(w, r, http.StatusBadRequest, "import %s: names ending in -journal, -wal or -shm belong to SQLite's helper files", name)
		return
	}
	if !s.cfg.Node.IsPrimary() {
		w.Header().Set(headerPrimaryHostname, s.cfg.Node.PrimaryHostname())
		s.httpError(w, r, http.StatusServiceUnavailable, "import %s: this node is a replica; import on the primary (%s)", name, s.cfg.Node.PrimaryHostname())
		return
	}
	tmp, err := os.CreateTemp(s.cfg.Store.TmpDir(), "import-*")
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, "import %s: %v", name, err)
		return
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if _, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, maxImportSize)); err != nil {
		s.httpError(w, r, http.StatusBadRequest, "import %s: read upload: %v", name, err)
		return
	}
	if err := validateDatabase(r.Context(), tmp); err != nil {
		s.httpError(w, r, http.StatusBadRequest, "import %s: %v", name, err)
		return
	}
	if err := importDatabase(r.Context(), filepath.Join(s.cfg.MountDir, filepath.FromSlash(name)), tmp.Name()); err != nil {
		s.httpError(w, r, http.StatusInternalServerError, "import %s: %v", name, err)
		return
	}
	db := s.cfg.Store.DB(name)
	if db == nil {
		s.httpError(w, r, http.StatusInternalServerError, "import %s: database not recorded after import", name)
		return
	}
	s.log.Info("imported database", "db", name, "pos", db.Pos())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name, "pos": db.Pos().String()})
}

// validateDatabase checks an uploaded file: SQLite header, a whole number of
// pages, and SQLite's own integrity check.
func validateDatabase(ctx context.Context, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr, err := ltx.ReadDBHeader(f, fi.Size())
	if err != nil {
		if errors.Is(err, ltx.ErrNotDatabase) {
			return err
		}
		return fmt.Errorf("not a SQLite database: %w", err)
	}
	if hdr.PageSize == 0 {
		return errors.New("not a SQLite database: empty file")
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: f.Name()}).EscapedPath()+"?mode=ro&immutable=1")
	if err != nil {
		return err
	}
	defer db.Close()
	var result string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&result); err != nil {
		return fmt.Errorf("not a usable SQLite database: %w", err)
	}
	if result != "ok" {
		return fmt.Errorf("database fails integrity_check: %s", result)
	}
	return nil
}

// importDatabase copies src over dst (a path in the mount) with SQLite's
// backup API, which takes the database's locks like any writer.
func importDatabase(ctx context.Context, dst, src string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	dstDB, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: dst}).EscapedPath()+"?_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer dstDB.Close()
	srcDB, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: src}).EscapedPath()+"?mode=ro&immutable=1")
	if err != nil {
		return err
	}
	defer srcDB.Close()
	dc, err := dstDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer dc.Close()
	sc, err := srcDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer sc.Close()
	return dc.Raw(func(d any) error {
		return sc.Raw(func(s any) error {
			bk, err := d.(*sqlite3.SQLiteConn).Backup("main", s.(*sqlite3.SQLiteConn), "main")
			if err != nil {
				return err
			}
			for {
				done, err := bk.Step(-1)
				if err != nil {
					bk.Finish()
					return fmt.Errorf("backup: %w", err)
				}
				if done {
					break
				}
			}
			return bk.Finish()
		})
	})
}
