package ltx

import (
	"bufio"
	"fmt"
	"iter"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	sltx "github.com/superfly/ltx"
)

// TxHeader describes one transaction to encode.
type TxHeader struct {
	TXID      sltx.TXID
	PageSize  uint32
	Commit    uint32 // database size in pages after the transaction
	PreApply  sltx.Checksum
	PostApply sltx.Checksum
	Timestamp time.Time
	NodeID    uint64
}

// ReadPageFunc fills buf with the new contents of page pgno.
type ReadPageFunc func(pgno uint32, buf []byte) error

// WriteFile encodes the pages pgnos (ascending, lock page excluded) of one
// transaction into a new LTX file at path. Page data is pulled through read
// one page at a time so a transaction of any size needs one page of memory.
// The file is fsynced when sync is set. On error the file is removed.
func WriteFile(path string, th TxHeader, pgnos iter.Seq[uint32], read ReadPageFunc, sync bool) (size int64, err error) {
	// Raw system calls: os.OpenFile costs several times more (poller
	// registration) and this runs once per commit.
	f, err := createFile(path)
	if err != nil {
		return 0, fmt.Errorf("create ltx file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close ltx file: %w", cerr)
		}
		if err != nil {
			_ = unix.Unlink(path)
		}
	}()

	bw := writers.Get().(*bufio.Writer)
	bw.Reset(f)
	defer writers.Put(bw)
	enc, err := sltx.NewEncoder(bw)
	if err != nil {
		return 0, fmt.Errorf("new ltx encoder: %w", err)
	}
	// A transaction of any size keeps a bounded page index in memory.
	enc.SetSpillDir(filepath.Dir(path))
	enc.SetSpillThreshold(1 << 15)
	defer enc.Cleanup()
	hdr := sltx.Header{
		Version:          sltx.Version,
		PageSize:         th.PageSize,
		Commit:           th.Commit,
		MinTXID:          th.TXID,
		MaxTXID:          th.TXID,
		Timestamp:        th.Timestamp.UnixMilli(),
		PreApplyChecksum: th.PreApply,
		NodeID:           th.NodeID,
	}
	if hdr.IsSnapshot() {
		hdr.PreApplyChecksum = 0
	}
	if err := enc.EncodeHeader(hdr); err != nil {
		return 0, fmt.Errorf("encode ltx header: %w", err)
	}
	buf := make([]byte, th.PageSize)
	for pgno := range pgnos {
		if err := read(pgno, buf); err != nil {
			return 0, fmt.Errorf("read page %d: %w", pgno, err)
		}
		if err := enc.EncodePage(sltx.PageHeader{Pgno: pgno}, buf); err != nil {
			return 0, fmt.Errorf("encode page %d: %w", pgno, err)
		}
	}
	enc.SetPostApplyChecksum(th.PostApply)
	if err := enc.Close(); err != nil {
		return 0, fmt.Errorf("close ltx encoder: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("flush ltx file: %w", err)
	}
	if sync {
		if err := unix.Fsync(f.fd); err != nil {
			return 0, fmt.Errorf("sync ltx file: %w", err)
		}
	}
	return enc.N(), nil
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// ltxFile is an LTX file being written, with raw system calls.
type ltxFile struct {
	fd   int
	path string
}

// createFile creates the LTX file under its final name. O_TMPFILE plus
// linkat would hide partial files, but costs several times more than a plain
// create on ext4 here; a partial file can only be the newest one, and
// recovery drops a newest file that fails verification.
func createFile(path string) (*ltxFile, error) {
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	return &ltxFile{fd: fd, path: path}, nil
}

func (f *ltxFile) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(f.fd, p[n:])
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

func (f *ltxFile) Close() error { return unix.Close(f.fd) }
