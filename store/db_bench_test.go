package store

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkWriteTx measures the cost of recording a one-page transaction,
// the per-commit overhead the node adds to a small SQLite transaction.
func BenchmarkWriteTx(b *testing.B) {
	s, err := Open(Config{Dir: b.TempDir(), Retention: time.Hour, RetentionInterval: time.Hour, SkipSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	db, err := s.CreateDB("bench.db")
	if err != nil {
		b.Fatal(err)
	}
	read := func(pgno uint32, buf []byte) error { buf[0] = byte(pgno); return nil }
	if _, err := db.WriteTx(Tx{PageSize: 4096, Commit: 2, Pages: AllPages(4096, 2), Read: read, Delta: 1, Replace: true}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.WriteTx(Tx{PageSize: 4096, Commit: 2, Pages: slices.Values([]uint32{2}), Read: read, Delta: 3}); err != nil {
			b.Fatal(err)
		}
	}
}
