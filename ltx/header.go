package ltx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// SQLiteMagic starts every SQLite database file.
const SQLiteMagic = "SQLite format 3\x00"

// DBHeader is the part of the SQLite database header the node needs.
type DBHeader struct {
	PageSize uint32 // 0 if the file is empty
	PageN    uint32 // logical size in pages
	WAL      bool   // file format versions say WAL mode
}

// ErrNotDatabase means a non-empty file does not start with the SQLite magic.
var ErrNotDatabase = errors.New("not a SQLite database")

// ParseDBHeader decodes the first 100 bytes of a database file. fileSize is
// used when the in-header page count is not valid (older writers, or a
// change counter mismatch), as SQLite itself does.
func ParseDBHeader(b []byte, fileSize int64) (DBHeader, error) {
	if len(b) < 100 || !bytes.Equal(b[:16], []byte(SQLiteMagic)) {
		return DBHeader{}, ErrNotDatabase
	}
	pageSize := uint32(binary.BigEndian.Uint16(b[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if pageSize < 512 || pageSize&(pageSize-1) != 0 {
		return DBHeader{}, ErrNotDatabase
	}
	hdr := DBHeader{PageSize: pageSize, WAL: b[18] == 2 || b[19] == 2}
	n := binary.BigEndian.Uint32(b[28:32])
	if n == 0 || binary.BigEndian.Uint32(b[24:28]) != binary.BigEndian.Uint32(b[92:96]) {
		n = uint32(fileSize / int64(pageSize))
	}
	hdr.PageN = n
	return hdr, nil
}

// ReadDBHeader reads and parses the header of an open database file. An empty
// file yields a zero header and no error.
func ReadDBHeader(r io.ReaderAt, fileSize int64) (DBHeader, error) {
	if fileSize == 0 {
		return DBHeader{}, nil
	}
	b := make([]byte, 100)
	if _, err := r.ReadAt(b, 0); err != nil && !(err == io.EOF && fileSize < 100) {
		return DBHeader{}, err
	}
	return ParseDBHeader(b, fileSize)
}
