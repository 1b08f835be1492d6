package ltx

import (
	"bufio"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
// The file is fsynced when sync is set. On error no file is left behind.
func WriteFile(path string, th TxHeader, pgnos iter.Seq[uint32], read ReadPageFunc, sync bool) (size int64, err error) {
	// The file is written unnamed (O_TMPFILE) and linked into place only when
	// complete, so a crash never leaves a partial LTX file behind. Raw system
	// calls are used because os.OpenFile costs several times more (poller
	// registration) and this runs once per commit.
	f, err := openUnnamed(filepath.Dir(path))
	if err != nil {
		return 0, fmt.Errorf("create ltx file: %w", err)
	}
	defer f.Close()

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
	if err := f.link(path); err != nil {
		return 0, fmt.Errorf("link ltx file: %w", err)
	}
	return enc.N(), nil
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// unnamedFile is a file being written before it gets its name.
type unnamedFile struct {
	fd      int
	dir     string
	tmpName string // set when O_TMPFILE is unsupported and a temp name is used
}

func openUnnamed(dir string) (*unnamedFile, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err == nil {
		return &unnamedFile{fd: fd, dir: dir}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	name := filepath.Join(dir, fmt.Sprintf(".tmp-%d-%d.ltx", os.Getpid(), tmpSeq.Add(1)))
	fd, err = unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	return &unnamedFile{fd: fd, dir: dir, tmpName: name}, nil
}

var tmpSeq atomic.Int64

func (f *unnamedFile) Write(p []byte) (int, error) {
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

func (f *unnamedFile) link(path string) error {
	if f.tmpName != "" {
		if err := os.Rename(f.tmpName, path); err != nil {
			return err
		}
		f.tmpName = ""
		return nil
	}
	return unix.Linkat(f.fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
}

func (f *unnamedFile) Close() error {
	if f.tmpName != "" {
		_ = os.Remove(f.tmpName)
	}
	return unix.Close(f.fd)
}
