// Package http is the node's HTTP API (the replication stream, /info,
// /export, /import) and the replica's client of the primary's stream.
//
// The stream is one long POST /stream response. The replica sends the
// positions it has; the primary answers with a sequence of frames, each a
// type byte and a big-endian payload:
//
//	LTX       name, u64 size, the LTX file's bytes (self-checksummed)
//	Snapshot  name, u64 txid, u64 checksum, u32 page size, u32 pages, the
//	          database image (its rolling checksum must equal checksum)
//	Drop      name (the database was deleted on the primary)
//	Heartbeat i64 primary clock in Unix milliseconds, sent when the replica
//	          is caught up and about once a second
//
// Every payload can be verified before it is applied, so a corrupt byte or
// a cut connection never leaves half a transaction on a replica.
package http

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	sltx "github.com/superfly/ltx"
)

type frameType byte

const (
	frameLTX       frameType = 1
	frameSnapshot  frameType = 2
	frameDrop      frameType = 3
	frameHeartbeat frameType = 4
)

// Headers of the stream response.
const (
	headerClusterID       = "Litefs-Cluster-Id"
	headerPrimaryHostname = "Litefs-Primary-Hostname"
	headerPos             = "Litefs-Pos"
)

// maxNameLen bounds a database name in a frame.
const maxNameLen = 4096

// streamRequest is the body of POST /stream.
type streamRequest struct {
	ClusterID string            `json:"clusterID"`
	Hostname  string            `json:"hostname"`
	Positions map[string]string `json:"positions"` // name -> "TXID/checksum"
}

// snapshotHeader is the fixed part of a Snapshot frame after the name.
type snapshotHeader struct {
	TXID     sltx.TXID
	Checksum sltx.Checksum
	PageSize uint32
	Commit   uint32
}

func (h snapshotHeader) size() int64 { return int64(h.PageSize) * int64(h.Commit) }

func writeName(w io.Writer, t frameType, name string) error {
	b := make([]byte, 3, 3+len(name))
	b[0] = byte(t)
	binary.BigEndian.PutUint16(b[1:], uint16(len(name)))
	_, err := w.Write(append(b, name...))
	return err
}

func writeLTXFrame(w io.Writer, name string, size int64) error {
	if err := writeName(w, frameLTX, name); err != nil {
		return err
	}
	return binary.Write(w, binary.BigEndian, uint64(size))
}

func writeSnapshotFrame(w io.Writer, name string, h snapshotHeader) error {
	if err := writeName(w, frameSnapshot, name); err != nil {
		return err
	}
	return binary.Write(w, binary.BigEndian, h)
}

func writeDropFrame(w io.Writer, name string) error { return writeName(w, frameDrop, name) }

func writeHeartbeat(w io.Writer, unixMilli int64) error {
	var b [9]byte
	b[0] = byte(frameHeartbeat)
	binary.BigEndian.PutUint64(b[1:], uint64(unixMilli))
	_, err := w.Write(b[:])
	return err
}

// errBadFrame means the stream carried something that is not a frame.
var errBadFrame = errors.New("malformed stream frame")

func readType(r io.Reader) (frameType, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	t := frameType(b[0])
	if t < frameLTX || t > frameHeartbeat {
		return 0, fmt.Errorf("%w: unknown type %d", errBadFrame, t)
	}
	return t, nil
}

func readName(r io.Reader) (string, error) {
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return "", err
	}
	if n == 0 || n > maxNameLen {
		return "", fmt.Errorf("%w: name length %d", errBadFrame, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	name := string(b)
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("%w: %w", errBadFrame, err)
	}
	return name, nil
}

// ValidateName checks that a database name is a clean relative path inside
// the mount, so nothing from the network can address a file outside it.
func ValidateName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\x00") {
		return fmt.Errorf("invalid database name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("invalid database name %q", name)
		}
	}
	return nil
}
