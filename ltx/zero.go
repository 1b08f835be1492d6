package ltx

import (
	"encoding/binary"
	"errors"
	"hash/crc64"
	"io"
	"os"
	"sync"

	sltx "github.com/superfly/ltx"
	"golang.org/x/sys/unix"
)

// zeroShift computes crc64.Update(c, crcTable, zeros(n)) for any c without
// touching n bytes: CRC is affine in its input state, so it is f(0) XOR a
// linear map taken from 64 basis states. Sparse databases (SQLite's own
// bigfile test extends one to 16 GB) have millions of all-zero pages, and
// this makes their checksums cost nanoseconds instead of a read and a CRC.
type zeroShift struct {
	base  uint64
	basis [64]uint64
}

var zeroShifts sync.Map // page size -> *zeroShift

func shiftFor(pageSize uint32) *zeroShift {
	if z, ok := zeroShifts.Load(pageSize); ok {
		return z.(*zeroShift)
	}
	zeros := make([]byte, pageSize)
	z := &zeroShift{base: crc64.Update(0, crcTable, zeros)}
	for i := range z.basis {
		z.basis[i] = crc64.Update(1<<i, crcTable, zeros) ^ z.base
	}
	zeroShifts.Store(pageSize, z)
	return z
}

// ZeroPageChecksum is PageChecksum(pgno, make([]byte, pageSize)), fast.
func ZeroPageChecksum(pgno, pageSize uint32) sltx.Checksum {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	c := crc64.Update(0, crcTable, b[:])
	z := shiftFor(pageSize)
	out := z.base
	for i := 0; c != 0; i, c = i+1, c>>1 {
		if c&1 != 0 {
			out ^= z.basis[i]
		}
	}
	return sltx.ChecksumFlag | sltx.Checksum(out)
}

// Holes tells which byte ranges of a file are holes (read as zeros without
// being stored), using SEEK_DATA/SEEK_HOLE. For readers that are not files it
// reports no holes.
type Holes struct {
	fd        int
	dataStart int64 // current data region, or -1 when unknown
	dataEnd   int64
	size      int64
}

// NewHoles returns a hole map for r if it is an *os.File.
func NewHoles(r io.ReaderAt) *Holes {
	f, ok := r.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	return &Holes{fd: int(f.Fd()), dataStart: -1, size: fi.Size()}
}

// Zero reports whether [off, off+n) lies entirely in a hole (or past EOF).
// Calls should move forward through the file.
func (h *Holes) Zero(off, n int64) bool {
	if h == nil {
		return false
	}
	if off >= h.size {
		return true
	}
	if h.dataStart < 0 || off >= h.dataEnd || off < h.dataStart-1 {
		start, err := unix.Seek(h.fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			h.dataStart, h.dataEnd = h.size, h.size
			return true
		} else if err != nil {
			h.dataStart = -1
			return false
		}
		end, err := unix.Seek(h.fd, start, unix.SEEK_HOLE)
		if err != nil {
			h.dataStart = -1
			return false
		}
		h.dataStart, h.dataEnd = start, end
	}
	return off+n <= h.dataStart
}
