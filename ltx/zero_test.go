package ltx

import (
	"os"
	"path/filepath"
	"testing"

	sltx "github.com/superfly/ltx"
)

func TestZeroPageChecksum(t *testing.T) {
	for _, ps := range []uint32{512, 4096, 65536} {
		zeros := make([]byte, ps)
		for _, pgno := range []uint32{1, 2, 255, 256, 65537, 1 << 31, 0xffffffff} {
			if got, want := ZeroPageChecksum(pgno, ps), sltx.ChecksumPage(pgno, zeros); got != want {
				t.Fatalf("ps=%d pgno=%d: got %s want %s", ps, pgno, got, want)
			}
			if got, want := PageChecksum(pgno, zeros), sltx.ChecksumPage(pgno, zeros); got != want {
				t.Fatalf("PageChecksum ps=%d pgno=%d: got %s want %s", ps, pgno, got, want)
			}
		}
	}
}

func TestDatabaseChecksumSparse(t *testing.T) {
	// A sparse file: data on pages 1 and 3, a hole of 1000 pages, data at the end.
	path := filepath.Join(t.TempDir(), "sparse.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const ps = 4096
	page := make([]byte, ps)
	for i := range page {
		page[i] = byte(i * 7)
	}
	for _, pgno := range []int64{1, 3, 1004} {
		if _, err := f.WriteAt(page, (pgno-1)*ps); err != nil {
			t.Fatal(err)
		}
	}
	got, err := DatabaseChecksum(f, ps, 1004)
	if err != nil {
		t.Fatal(err)
	}
	want, err := sltx.ChecksumReader(f2reader(t, path), ps)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("sparse checksum %s, want %s", got, want)
	}
}

func f2reader(t *testing.T, path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
