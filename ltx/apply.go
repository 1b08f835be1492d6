package ltx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	sltx "github.com/superfly/ltx"
)

// Verify decodes a whole LTX file and checks its structure and file checksum
// without applying anything, so a corrupt or truncated file is rejected before
// a single page reaches a database.
func Verify(path string) (sltx.Header, sltx.Trailer, error) {
	f, err := os.Open(path)
	if err != nil {
		return sltx.Header{}, sltx.Trailer{}, err
	}
	defer f.Close()
	dec := sltx.NewDecoder(bufio.NewReaderSize(f, 64<<10))
	if err := dec.Verify(); err != nil {
		return sltx.Header{}, sltx.Trailer{}, fmt.Errorf("verify ltx %s: %w", path, err)
	}
	return dec.Header(), dec.Trailer(), nil
}

// ErrChecksumMismatch means the database is not at the position an LTX file
// applies to, or did not reach the position the file promises.
var ErrChecksumMismatch = errors.New("database checksum mismatch")

// ApplyFile verifies the LTX file at path and then writes its pages into db,
// truncating db to the committed size. When verifyPre is set the database
// checksum must equal the file's pre-apply checksum first (snapshots excepted).
// The post-apply checksum is always checked against the result.
func ApplyFile(path string, db *os.File, verifyPre bool) (sltx.Header, sltx.Trailer, error) {
	hdr, trailer, err := Verify(path)
	if err != nil {
		return hdr, trailer, err
	}
	if verifyPre && !hdr.IsSnapshot() {
		got, err := openChecksum(db)
		if err != nil {
			return hdr, trailer, fmt.Errorf("checksum before apply: %w", err)
		}
		if got != hdr.PreApplyChecksum {
			return hdr, trailer, fmt.Errorf("apply ltx %s: pre-apply checksum is %s, database is %s: %w",
				path, hdr.PreApplyChecksum, got, ErrChecksumMismatch)
		}
	}

	f, err := os.Open(path)
	if err != nil {
		return hdr, trailer, err
	}
	defer f.Close()
	dec := sltx.NewDecoder(bufio.NewReaderSize(f, 64<<10))
	if err := dec.DecodeHeader(); err != nil {
		return hdr, trailer, fmt.Errorf("decode ltx header %s: %w", path, err)
	}
	var ph sltx.PageHeader
	data := make([]byte, hdr.PageSize)
	for {
		if err := dec.DecodePage(&ph, data); err == io.EOF {
			break
		} else if err != nil {
			return hdr, trailer, fmt.Errorf("decode ltx page %s: %w", path, err)
		}
		if _, err := db.WriteAt(data, int64(ph.Pgno-1)*int64(hdr.PageSize)); err != nil {
			return hdr, trailer, fmt.Errorf("write page %d: %w", ph.Pgno, err)
		}
	}
	if err := dec.Close(); err != nil {
		return hdr, trailer, fmt.Errorf("close ltx decoder %s: %w", path, err)
	}
	if err := db.Truncate(int64(hdr.Commit) * int64(hdr.PageSize)); err != nil {
		return hdr, trailer, fmt.Errorf("truncate database: %w", err)
	}
	got, err := DatabaseChecksum(db, hdr.PageSize, hdr.Commit)
	if err != nil {
		return hdr, trailer, fmt.Errorf("checksum after apply: %w", err)
	}
	if got != trailer.PostApplyChecksum {
		return hdr, trailer, fmt.Errorf("apply ltx %s: post-apply checksum is %s, database is %s: %w",
			path, trailer.PostApplyChecksum, got, ErrChecksumMismatch)
	}
	return hdr, trailer, nil
}

// openChecksum checksums an open database file by its own header, which may
// have a different page size than the LTX file about to replace it.
func openChecksum(db *os.File) (sltx.Checksum, error) {
	fi, err := db.Stat()
	if err != nil {
		return 0, err
	}
	hdr, err := ReadDBHeader(db, fi.Size())
	if err != nil {
		return 0, err
	}
	if hdr.PageSize == 0 {
		return EmptyChecksum, nil
	}
	return DatabaseChecksum(db, hdr.PageSize, hdr.PageN)
}
