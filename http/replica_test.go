package http

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replfs/litefs/ltx"
)

// trickleServer is a fake primary whose every stream sends a snapshot of
// img in pieces, each piece after a pause, then heartbeats. stall makes it
// go silent instead: "before" the first frame, or in the "middle" of the
// image.
func trickleServer(t *testing.T, img []byte, pieces int, pause time.Duration, stall string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	hdr, err := ltx.ParseDBHeader(img, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := ltx.DatabaseChecksum(bytes.NewReader(img), hdr.PageSize, hdr.PageN)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Add(1)
		w.Header().Set(headerClusterID, "LFSC0000000000000001")
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		fl.Flush()
		if stall == "before" {
			<-r.Context().Done()
			return
		}
		_ = writeSnapshotFrame(w, "a.db", snapshotHeader{TXID: 7, Checksum: sum, PageSize: hdr.PageSize, Commit: hdr.PageN})
		fl.Flush()
		step := (len(img) + pieces - 1) / pieces
		for off := 0; off < len(img); off += step {
			if stall == "middle" && off >= len(img)/2 {
				<-r.Context().Done()
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pause):
			}
			_, _ = w.Write(img[off:min(off+step, len(img))])
			fl.Flush()
		}
		for {
			_ = writeHeartbeat(w, time.Now().UnixMilli())
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pause):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &conns
}

// setIdleTimeout shortens the replica's silence limit for one test.
func setIdleTimeout(t *testing.T, d time.Duration) {
	old := idleTimeout
	idleTimeout = d
	t.Cleanup(func() { idleTimeout = old })
}

// TestReplicaSlowFrameIsNotSilence streams a snapshot that takes longer
// than the idle timeout to arrive, with data flowing all along: the
// replica must receive and apply it on the first connection. (A limit
// counted from the start of each frame would cut every snapshot bigger than
// what the link carries in that time, forever.)
func TestReplicaSlowFrameIsNotSilence(t *testing.T) {
	setIdleTimeout(t, 400*time.Millisecond)
	img := testImages(t, 3)[2]
	srv, conns := trickleServer(t, img, 10, idleTimeout/4, "") // 2.5 idle timeouts in all
	st, logs := runReplica(t, &testPrimary{url: srv.URL}, &fakeCluster{})
	for {
		if db := st.DB("a.db"); db != nil && db.Pos().TXID == 7 {
			break
		}
		if conns.Load() > 1 {
			t.Fatalf("replica gave up on a snapshot that was still arriving:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, _ := os.ReadFile(st.Path("a.db")); !bytes.Equal(b, img) {
		t.Fatal("applied snapshot is not the image")
	}
}

// TestReplicaSilentPrimary checks the other side of the idle timeout: a
// primary that stops sending, between frames or in the middle of one, is
// given up on and the replica reconnects, applying nothing partial.
func TestReplicaSilentPrimary(t *testing.T) {
	setIdleTimeout(t, 300*time.Millisecond)
	img := testImages(t, 3)[2]
	for _, stall := range []string{"before", "middle"} {
		t.Run(stall, func(t *testing.T) {
			srv, conns := trickleServer(t, img, 10, 10*time.Millisecond, stall)
			st, logs := runReplica(t, &testPrimary{url: srv.URL}, &fakeCluster{})
			deadline := time.Now().Add(20 * time.Second)
			for conns.Load() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("replica kept waiting on a silent primary:\n%s", logs)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if db := st.DB("a.db"); db != nil {
				t.Fatalf("half a snapshot applied: %s", db.Pos())
			}
			if !strings.Contains(logs.String(), "context canceled") {
				t.Fatalf("replica log does not show the stream being ended:\n%s", logs)
			}
		})
	}
}
