// Package ltx wraps github.com/superfly/ltx with what the node needs on top of
// the file format: fast page checksums, encoding a set of changed pages into an
// LTX file, and applying LTX files to a database file.
package ltx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"

	sltx "github.com/superfly/ltx"
)

var crcTable = crc64.MakeTable(crc64.ISO)

// EmptyChecksum is the rolling checksum of a database with no pages.
const EmptyChecksum = sltx.ChecksumFlag

// PageChecksum returns the CRC64-ISO of the big-endian page number followed by
// the page data, with the checksum flag set, exactly as the ltx format defines
// it. It avoids the allocation and reflection of sltx.ChecksumPage because it
// runs on every captured page.
func PageChecksum(pgno uint32, data []byte) sltx.Checksum {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	crc := crc64.Update(0, crcTable, b[:])
	crc = crc64.Update(crc, crcTable, data)
	return sltx.ChecksumFlag | sltx.Checksum(crc)
}

// LockPgno is the page SQLite never writes because it holds the lock bytes.
func LockPgno(pageSize uint32) uint32 { return sltx.LockPgno(pageSize) }

// ErrShortDatabase means a database file ends in the middle of a page.
var ErrShortDatabase = errors.New("database file size is not a multiple of the page size")

// DatabaseChecksum computes the rolling checksum of the first nPages pages of
// r. The lock page is skipped, as the format requires.
func DatabaseChecksum(r io.ReaderAt, pageSize, nPages uint32) (sltx.Checksum, error) {
	chksum := EmptyChecksum
	lockPgno := LockPgno(pageSize)
	buf := make([]byte, pageSize)
	holes := NewHoles(r)
	for pgno := uint32(1); pgno <= nPages; pgno++ {
		if pgno == lockPgno {
			continue
		}
		off := int64(pgno-1) * int64(pageSize)
		if holes.Zero(off, int64(pageSize)) {
			chksum ^= ZeroPageChecksum(pgno, pageSize)
			continue
		}
		if n, err := r.ReadAt(buf, off); err != nil && !(err == io.EOF && n >= 0) {
			return 0, fmt.Errorf("read page %d: %w", pgno, err)
		} else if n < len(buf) {
			clear(buf[n:])
		}
		chksum ^= PageChecksum(pgno, buf)
	}
	return sltx.ChecksumFlag | chksum, nil
}

// FileChecksum opens a database file and checksums it using the page size and
// size read from its own header.
func FileChecksum(path string) (sltx.Checksum, DBHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, DBHeader{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, DBHeader{}, err
	}
	hdr, err := ReadDBHeader(f, fi.Size())
	if err != nil {
		return 0, DBHeader{}, fmt.Errorf("%s: %w", path, err)
	}
	if hdr.PageSize == 0 {
		return EmptyChecksum, hdr, nil
	}
	chksum, err := DatabaseChecksum(f, hdr.PageSize, hdr.PageN)
	return chksum, hdr, err
}
