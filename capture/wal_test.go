package capture

import (
	"encoding/binary"
	"testing"
)

func frameHeader(pgno, commit, salt1, salt2 uint32) []byte {
	h := make([]byte, walFrameHeaderSize)
	binary.BigEndian.PutUint32(h[0:], pgno)
	binary.BigEndian.PutUint32(h[4:], commit)
	binary.BigEndian.PutUint32(h[8:], salt1)
	binary.BigEndian.PutUint32(h[12:], salt2)
	return h
}

// The kernel splits writes at page-cache boundaries, which can cut a frame
// header in two; assemble must put it back together in any split.
func TestAssembleSplitHeader(t *testing.T) {
	h := frameHeader(7, 3, 11, 12)
	const fo = 4088 // header spans the 4096 boundary
	for split := 1; split < walFrameHeaderSize; split++ {
		var w walState
		if _, ok := w.assemble(fo, h[:split], fo); ok {
			t.Fatalf("split %d: header complete after first part", split)
		}
		got, ok := w.assemble(fo, h[split:], fo+int64(split))
		if !ok || string(got) != string(h) {
			t.Fatalf("split %d: got %x ok=%v", split, got, ok)
		}
	}
	var w walState
	if got, ok := w.assemble(fo, h, fo); !ok || string(got) != string(h) {
		t.Fatalf("whole header not returned")
	}
}

// A commit waits until every byte of its transaction has been written, in
// whatever order the writes came.
func TestCoverReady(t *testing.T) {
	tests := []struct {
		name   string
		writes [][2]int64
		ready  bool
	}{
		{"in order", [][2]int64{{32, 100}, {100, 200}}, true},
		{"reordered", [][2]int64{{100, 200}, {32, 100}}, true},
		{"gap", [][2]int64{{32, 90}, {100, 200}}, false},
		{"short", [][2]int64{{32, 150}}, false},
		{"overlapping", [][2]int64{{32, 120}, {60, 80}, {110, 250}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := walState{txnStart: 32, commitEnd: 200}
			for _, wr := range tt.writes {
				w.cover(wr[0], wr[1])
			}
			if w.ready() != tt.ready {
				t.Fatalf("ready = %v, want %v (covered %v)", w.ready(), tt.ready, w.covered)
			}
		})
	}
	if (&walState{txnStart: 32}).ready() {
		t.Fatal("ready without a commit frame")
	}
}

// Header rewrites of the last committed transaction's frames (SQLite's
// checksum fix-ups) are not rewinds; anything else before the open
// transaction is.
func TestIsFixup(t *testing.T) {
	w := walState{pageSize: 4096, lastStart: 32, lastSlots: []uint32{5, 9}}
	fs := w.frameSize()
	if !w.isFixup(32, 5) || !w.isFixup(32+fs, 9) {
		t.Fatal("fix-up of a committed frame not recognised")
	}
	if w.isFixup(32, 9) || w.isFixup(32+2*fs, 9) {
		t.Fatal("rewind taken for a fix-up")
	}
}

// pending maps pages to their newest frame up to the commit frame, ignoring
// frames of a longer rolled-back transaction that lie beyond it.
func TestPending(t *testing.T) {
	w := walState{pageSize: 4096, txnStart: 32, slots: []uint32{3, 4, 3, 8}}
	fs := w.frameSize()
	p := w.pending(32 + 2*fs) // commit frame is slot 2
	if len(p) != 2 || p[3] != 2 || p[4] != 1 {
		t.Fatalf("pending = %v", p)
	}
}
