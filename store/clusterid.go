package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// clusterIDFile holds the ID of the cluster this node's data belongs to. A
// node never streams from (or to) a node of another cluster: mixing two
// clusters' databases would silently replace one with the other.
const clusterIDFile = "clusterid"

// ClusterID returns the recorded cluster ID, "" if none.
func (s *Store) ClusterID() string {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, clusterIDFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SetClusterID records id durably.
func (s *Store) SetClusterID(id string) error {
	path := filepath.Join(s.cfg.Dir, clusterIDFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return fmt.Errorf("write cluster id: %w", err)
	}
	if !s.cfg.SkipSync {
		if err := fsyncPath(tmp); err != nil {
			return fmt.Errorf("write cluster id: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write cluster id: %w", err)
	}
	return nil
}

// NewClusterID returns a random cluster ID.
func NewClusterID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "LFSC" + strings.ToUpper(hex.EncodeToString(b[:]))
}
