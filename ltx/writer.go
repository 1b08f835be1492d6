package ltx

import (
	"bufio"
	"fmt"
	"iter"
	"os"
	"time"

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
// The file is fsynced when sync is set. On error the partial file is removed.
func WriteFile(path string, th TxHeader, pgnos iter.Seq[uint32], read ReadPageFunc, sync bool) (size int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create ltx file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close ltx file: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()

	bw := bufio.NewWriterSize(f, 64<<10)
	enc, err := sltx.NewEncoder(bw)
	if err != nil {
		return 0, fmt.Errorf("new ltx encoder: %w", err)
	}
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
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("sync ltx file: %w", err)
		}
	}
	return enc.N(), nil
}
