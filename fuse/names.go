package fuse

import "strings"

// fileKind says how writes to a file are routed.
type fileKind int

const (
	kindDB      fileKind = iota // any file that is not a helper: a database, or a plain file
	kindJournal                 // <db>-journal
	kindWAL                     // <db>-wal
	kindSHM                     // <db>-shm, never replicated
)

// classify returns a file's kind and the name of the database it belongs to.
func classify(name string) (fileKind, string) {
	switch {
	case strings.HasSuffix(name, "-journal"):
		return kindJournal, strings.TrimSuffix(name, "-journal")
	case strings.HasSuffix(name, "-wal"):
		return kindWAL, strings.TrimSuffix(name, "-wal")
	case strings.HasSuffix(name, "-shm"):
		return kindSHM, strings.TrimSuffix(name, "-shm")
	}
	return kindDB, name
}

// joinName joins a relative directory path and a name with a slash.
func joinName(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
