package tests

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replfs/litefs/ltx"
	sltx "github.com/superfly/ltx"
)

// faultKind is what the proxy does to the first LTX file (or snapshot)
// it sees once armed.
type faultKind int

const (
	faultNone            faultKind = iota
	faultCorrupt                   // flip one byte of page data, 150 bytes after the LTX magic
	faultCut                       // close the connection halfway through the LTX file
	faultCorruptSnapshot           // flip one byte in the middle of a snapshot image
)

// corruptOffset is where, from the LTX magic, the corrupt fault flips a byte:
// past the 100-byte header and the first page header, inside page data.
const corruptOffset = 150

// firedFault describes the LTX file or snapshot a fault was applied to.
type firedFault struct {
	hdr  sltx.Header // the LTX file's header, as it went through intact
	snap sltx.TXID   // the snapshot's TXID
	size int64       // the file's or image's size from its frame
}

// faultProxy is a TCP proxy between a replica and the primary. Bytes from
// the replica go through untouched; bytes from the primary go through
// untouched except for one fault, applied once, to the first LTX file (or
// snapshot) of the database that passes after arm. The proxy follows the
// HTTP response's chunked encoding so the fault lands in the stream's
// payload (never in chunk framing) and frames are only looked for there. Once the fault has fired, new
// connections wait until release, so the test can look at the replica
// while it is cut off from the primary.
type faultProxy struct {
	t        *testing.T
	ln       net.Listener
	upstream string
	name     string // the database whose frames are looked for

	mu         sync.Mutex
	armed      faultKind
	used       bool
	hold       chan struct{} // closed by release
	fired      chan firedFault
	conns      map[net.Conn]bool
	closed     bool
	wg         sync.WaitGroup
	nconns     int
	framesSeen int
}

func newFaultProxy(t *testing.T, upstreamURL, name string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		t: t, ln: ln, upstream: strings.TrimPrefix(upstreamURL, "http://"), name: name,
		hold: make(chan struct{}), fired: make(chan firedFault, 1), conns: map[net.Conn]bool{},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's address, to be used as the replica's primary URL.
func (p *faultProxy) URL() string { return "http://" + p.ln.Addr().String() }

// arm makes the next LTX file (snapshot for faultCorruptSnapshot) that
// passes through suffer fault k.
func (p *faultProxy) arm(k faultKind) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = k
}

// release lets the connections held since the fault through.
func (p *faultProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		select {
		case <-p.hold:
		default:
			close(p.hold)
		}
	}
}

// waitFired waits for the armed fault to have been applied.
func (p *faultProxy) waitFired(t *testing.T, r *Node) firedFault {
	t.Helper()
	select {
	case f := <-p.fired:
		return f
	case <-time.After(30 * time.Second):
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Fatalf("fault never fired (%d connections, %d frames of the database seen)\nreplica log:\n%s", p.nconns, p.framesSeen, r.Log())
		return firedFault{}
	}
}

// claim reports whether the fault applies to an LTX file (or, with
// snapshot set, a snapshot) just seen, and which one; it applies once.
func (p *faultProxy) claim(snapshot bool) faultKind {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.framesSeen++
	if p.used || p.armed == faultNone || (p.armed == faultCorruptSnapshot) != snapshot {
		return faultNone
	}
	p.used = true
	return p.armed
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	select {
	case <-p.hold:
	default:
		close(p.hold)
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.serve(c)
		}()
	}
}

func (p *faultProxy) serve(c net.Conn) {
	p.mu.Lock()
	p.nconns++
	wait := p.used
	hold := p.hold
	p.mu.Unlock()
	if wait {
		<-hold // the replica stays cut off until the test has looked at it
	}
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	if !p.track(u) {
		return
	}
	defer p.untrack(u)
	go func() {
		_, _ = io.Copy(u, c) // requests go through untouched
		_ = u.(*net.TCPConn).CloseWrite()
	}()
	sc := &streamScanner{p: p}
	buf := make([]byte, 32<<10)
	for {
		n, err := u.Read(buf)
		if n > 0 {
			out, cut := sc.scan(buf[:n])
			if _, werr := c.Write(out); werr != nil || cut {
				return // cut: both connections close mid-file
			}
		}
		if err != nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// streamScanner follows one connection's response bytes: the HTTP headers,
// then the chunked body, and within the body the frames of the database:
// LTX frames (type 1, name, u64 size, then the file starting with "LTX1")
// and snapshot frames (type 2, name, TXID, checksum, page size, pages, then
// the image starting with SQLite's magic).
type streamScanner struct {
	p *faultProxy

	state  int
	line   []byte
	remain int64 // bytes left in the current chunk
	crlf   int   // bytes left of the CRLF after a chunk

	off    int64  // offset in the de-chunked body
	window []byte // the last body bytes

	kind   faultKind // the fault being applied on this connection
	start  int64     // body offset of the faulted file's magic
	size   int64
	hdr    []byte
	snap   sltx.TXID
	notify bool
}

const (
	scanHeaders = iota
	scanChunkSize
	scanChunkData
	scanChunkEnd
	scanRaw // not chunked, or after the last chunk: pass through
)

// scan inspects (and, for the fault, modifies) bytes on their way to the
// replica. It returns what to forward and whether to cut the connection
// after forwarding it.
func (s *streamScanner) scan(b []byte) ([]byte, bool) {
	for i := 0; i < len(b); i++ {
		switch s.state {
		case scanHeaders:
			s.line = append(s.line, b[i])
			if bytes.HasSuffix(s.line, []byte("\r\n\r\n")) {
				if bytes.Contains(bytes.ToLower(s.line), []byte("transfer-encoding: chunked")) {
					s.state = scanChunkSize
				} else {
					s.state = scanRaw
				}
				s.line = s.line[:0]
			}
		case scanChunkSize:
			s.line = append(s.line, b[i])
			if b[i] == '\n' {
				hex, _, _ := strings.Cut(strings.TrimSpace(string(s.line)), ";")
				n, err := strconv.ParseInt(hex, 16, 64)
				s.line = s.line[:0]
				if err != nil || n == 0 {
					s.state = scanRaw
				} else {
					s.remain, s.state = n, scanChunkData
				}
			}
		case scanChunkData:
			if cut := s.body(b, i); cut {
				return b[:i], true
			}
			s.remain--
			if s.remain == 0 {
				s.state, s.crlf = scanChunkEnd, 2
			}
		case scanChunkEnd:
			s.crlf--
			if s.crlf == 0 {
				s.state = scanChunkSize
			}
		case scanRaw:
			return b, false
		}
	}
	return b, false
}

// body handles the body byte b[i]; it reports whether the connection must
// be cut before it.
func (s *streamScanner) body(b []byte, i int) bool {
	defer func() { s.off++ }()
	if s.kind != faultNone {
		rel := s.off - s.start
		if rel < sltx.HeaderSize {
			s.hdr = append(s.hdr, b[i])
		}
		switch {
		case s.kind == faultCut && rel == s.size/2:
			s.fire()
			return true
		case s.kind == faultCorrupt && rel == corruptOffset,
			s.kind == faultCorruptSnapshot && rel == s.size/2:
			b[i] ^= 0x5a
			s.fire()
		}
	}
	if s.kind != faultNone {
		return false
	}
	if len(s.window) == 256 {
		s.window = append(s.window[:0], s.window[128:]...)
	}
	s.window = append(s.window, b[i])
	// The frame prefix: type byte, name length and name.
	prefix := func(t byte, fixed int, magic string) ([]byte, bool) {
		n := 3 + len(s.p.name) + fixed + len(magic)
		if len(s.window) < n || !bytes.HasSuffix(s.window, []byte(magic)) {
			return nil, false
		}
		w := s.window[len(s.window)-n:]
		if w[0] != t || int(binary.BigEndian.Uint16(w[1:3])) != len(s.p.name) || string(w[3:3+len(s.p.name)]) != s.p.name {
			return nil, false
		}
		return w[3+len(s.p.name) : 3+len(s.p.name)+fixed], true
	}
	if f, ok := prefix(1, 8, sltx.Magic); ok {
		if size := int64(binary.BigEndian.Uint64(f)); size > corruptOffset {
			if k := s.p.claim(false); k != faultNone {
				s.kind, s.start, s.size = k, s.off-int64(len(sltx.Magic))+1, size
				s.hdr = append(s.hdr[:0], sltx.Magic...)
			}
		}
	}
	if f, ok := prefix(2, 24, ltx.SQLiteMagic); ok {
		size := int64(binary.BigEndian.Uint32(f[16:20])) * int64(binary.BigEndian.Uint32(f[20:24]))
		if k := s.p.claim(true); k != faultNone {
			s.kind, s.start, s.size = k, s.off-int64(len(ltx.SQLiteMagic))+1, size
			s.snap = sltx.TXID(binary.BigEndian.Uint64(f[0:8]))
		}
	}
	return false
}

func (s *streamScanner) fire() {
	if s.notify {
		return
	}
	s.notify = true
	var hdr sltx.Header
	if s.kind != faultCorruptSnapshot {
		if err := hdr.UnmarshalBinary(s.hdr); err != nil {
			s.p.t.Errorf("faulted LTX file has no valid header: %v", err)
		}
	}
	s.p.fired <- firedFault{hdr: hdr, snap: s.snap, size: s.size}
}

// posWatcher reads a replica's <db>-pos in a loop and records every value.
type posWatcher struct {
	mu   sync.Mutex
	seen map[string]bool
	stop chan struct{}
	done chan struct{}
}

func watchPos(n *Node, name string) *posWatcher {
	w := &posWatcher{seen: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
			b, err := os.ReadFile(n.Path(name + "-pos"))
			if err != nil {
				continue
			}
			w.mu.Lock()
			w.seen[strings.TrimSpace(string(b))] = true
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *posWatcher) positions() []string {
	close(w.stop)
	<-w.done
	var out []string
	for p := range w.seen {
		out = append(out, p)
	}
	return out
}

// historyPositions maps every position in a node's LTX history of a
// database ("TXID/checksum", as <db>-pos shows it) to its TXID.
func historyPositions(t *testing.T, n *Node, name string) map[string]sltx.TXID {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(n.LTXDir(name), "*.ltx"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]sltx.TXID{}
	for _, path := range paths {
		hdr, trailer, err := ltx.Verify(path)
		if err != nil {
			t.Fatalf("primary history: %v", err)
		}
		out[posString(sltx.NewPos(hdr.MaxTXID, trailer.PostApplyChecksum))] = hdr.MaxTXID
	}
	return out
}

// replayTo rebuilds a database at TXID txid from a node's LTX history.
func replayTo(t *testing.T, n *Node, name string, txid sltx.TXID) []byte {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "replay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for id := sltx.TXID(1); id <= txid; id++ {
		if _, _, err := ltx.ApplyFile(filepath.Join(n.LTXDir(name), sltx.FormatFilename(id, id)), f, id > 1); err != nil {
			t.Fatalf("replay txid %d: %v", id, err)
		}
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigTx commits one transaction of rows random 3000-byte blobs, so its LTX
// file spans several pages.
func bigTx(t *testing.T, db *sql.DB, rows int) {
	t.Helper()
	mustExec(t, db, fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < %d)
		INSERT INTO t (v) SELECT randomblob(3000) FROM s`, rows))
}

// waitLog waits until a node's log, after offset from, contains want.
func waitLog(t *testing.T, n *Node, from int, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := n.Log()
		if from > len(l) {
			from = len(l)
		}
		if strings.Contains(l[from:], want) {
			return l[from:]
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, l[from:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamCorruptByteInLTX flips one byte of page data of an LTX file on
// its way to a replica. The chunked framing stays intact, so only the LTX
// file's own checksum can catch it: the replica must refuse the file, keep
// its previous position and database, and catch up on a new connection.
func TestStreamCorruptByteInLTX(t *testing.T) {
	// The error comes from verifying the file (its checksum or its LZ4
	// block, depending on the byte hit).
	runStreamFault(t, faultCorrupt, "verify ltx")
}

// TestStreamCutMidFile closes the connection halfway through an LTX file:
// the replica must apply nothing of it, then reconnect and catch up.
func TestStreamCutMidFile(t *testing.T) {
	runStreamFault(t, faultCut, "receive ltx for app.db")
}

func runStreamFault(t *testing.T, kind faultKind, wantErr string) {
	for _, mode := range []string{"delete", "wal"} {
		t.Run(mode, func(t *testing.T) {
			primary := newNodeWith(t, NodeConfig{Hostname: "primary", Candidate: true})
			primary.Start()
			proxy := newFaultProxy(t, primary.URL(), "app.db")
			r := newNodeWith(t, NodeConfig{Hostname: "replica1", PrimaryURL: proxy.URL()})
			r.Start()

			db := openDB(t, primary.Path("app.db"), mode)
			mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
			for i := 0; i < 3; i++ {
				bigTx(t, db, 3)
			}
			waitCaughtUp(t, primary, "app.db", r)
			watch := watchPos(r, "app.db")
			logBefore := len(r.Log())

			// Transactions of 5 x 3000-byte rows: LTX files of several pages.
			proxy.arm(kind)
			for i := 0; i < 4; i++ {
				bigTx(t, db, 5)
			}
			f := proxy.waitFired(t, r)
			if f.hdr.MinTXID < 2 {
				t.Fatalf("fault hit an LTX file with header %+v", f.hdr)
			}
			errLog := waitLog(t, r, logBefore, wantErr)

			// While the replica cannot reconnect: it is exactly at the
			// transaction before the damaged file, with the primary's
			// database as of that transaction, nothing of the file applied.
			prev := f.hdr.MinTXID - 1
			hist := historyPositions(t, primary, "app.db")
			got := r.Pos("app.db")
			if txid, ok := hist[got]; !ok || txid != prev {
				t.Fatalf("replica at %s after the fault on txid %d; want the primary's position at txid %d\nlog:\n%s", got, f.hdr.MinTXID, prev, errLog)
			}
			want := replayTo(t, primary, "app.db", prev)
			if b, err := os.ReadFile(r.BackingPath("app.db")); err != nil || !bytes.Equal(b, want) {
				t.Fatalf("replica database is not the primary's at txid %d (%d vs %d bytes, %v)", prev, len(b), len(want), err)
			}
			if strings.Contains(errLog, "applied snapshot") || strings.Contains(errLog, "asking for a snapshot") {
				t.Fatalf("a transport fault made the replica start over from a snapshot:\n%s", errLog)
			}

			// The primary moves on meanwhile; then the replica reconnects.
			bigTx(t, db, 5)
			proxy.release()
			bigTx(t, db, 5)
			waitCaughtUp(t, primary, "app.db", r)
			assertIdentical(t, primary, r, "app.db")

			// No position the replica ever showed is missing from the
			// primary's history: nothing was half-applied.
			hist = historyPositions(t, primary, "app.db")
			for _, p := range watch.positions() {
				if _, ok := hist[p]; !ok {
					t.Errorf("replica showed position %s, which the primary never had", p)
				}
			}
			after := r.Log()[logBefore:]
			if strings.Contains(after, "applied snapshot") {
				t.Errorf("replica resumed with a snapshot instead of the retained history:\n%s", after)
			}
			if errs := r.Errors(); len(errs) > 0 {
				t.Errorf("replica logged errors:\n%s", strings.Join(errs, "\n"))
			}
			t.Logf("fault on txid %d (%d bytes); replica error: %s", f.hdr.MinTXID, f.size, firstLine(errLog, wantErr))
		})
	}
}

// firstLine returns the first line of s containing sub.
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestStreamCorruptSnapshot flips one byte in the middle of a snapshot
// image in flight, to a new replica and to one that has the database but
// is behind the primary's retained history. The image's checksum must
// catch it: the replica keeps what it had (nothing, or its old database
// at its old position), then receives a sound snapshot on reconnecting.
func TestStreamCorruptSnapshot(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(map[bool]string{false: "new", true: "existing"}[existing], func(t *testing.T) {
			data := "  retention: 1s\n  retention-monitor-interval: 100ms"
			primary := newNodeWith(t, NodeConfig{Hostname: "primary", Candidate: true, Data: data})
			primary.Start()
			proxy := newFaultProxy(t, primary.URL(), "app.db")
			r := newNodeWith(t, NodeConfig{Hostname: "replica1", PrimaryURL: proxy.URL(), Data: data})
			db := openDB(t, primary.Path("app.db"), "wal")
			mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
			bigTx(t, db, 10)

			var before []byte
			var posBefore string
			if existing {
				r.Start()
				waitCaughtUp(t, primary, "app.db", r)
				posBefore = r.Pos("app.db")
				r.Stop()
				var err error
				if before, err = os.ReadFile(r.BackingPath("app.db")); err != nil {
					t.Fatal(err)
				}
				// The primary moves on and the history the replica needs
				// expires (the newest file is always kept).
				next, err := strconv.ParseUint(posBefore[:16], 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				bigTx(t, db, 10)
				bigTx(t, db, 1)
				waitGone(t, filepath.Join(primary.LTXDir("app.db"), sltx.FormatFilename(sltx.TXID(next+1), sltx.TXID(next+1))))
			}
			logBefore := len(r.Log())
			proxy.arm(faultCorruptSnapshot)
			r.Start()
			f := proxy.waitFired(t, r)
			errLog := waitLog(t, r, logBefore, "snapshot of app.db: image checksum")

			// While cut off: what the replica had, unchanged.
			if existing {
				if got := r.Pos("app.db"); got != posBefore {
					t.Fatalf("replica position %s after a corrupt snapshot, had %s", got, posBefore)
				}
				if b, err := os.ReadFile(r.BackingPath("app.db")); err != nil || !bytes.Equal(b, before) {
					t.Fatalf("replica database changed by a corrupt snapshot (%v)", err)
				}
			} else {
				if _, err := os.Stat(r.BackingPath("app.db")); !os.IsNotExist(err) {
					t.Fatalf("corrupt snapshot created the database: %v", err)
				}
				if info := fetchInfo(t, r); len(info.Databases) != 0 {
					t.Fatalf("replica lists databases after a corrupt snapshot: %+v", info.Databases)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(r.DataDir, "tmp")); len(ents) != 0 {
				t.Fatalf("corrupt snapshot left %v behind", ents)
			}

			proxy.release()
			bigTx(t, db, 2)
			waitCaughtUp(t, primary, "app.db", r)
			assertIdentical(t, primary, r, "app.db")
			if errs := r.Errors(); len(errs) > 0 {
				t.Errorf("replica logged errors:\n%s", strings.Join(errs, "\n"))
			}
			t.Logf("fault on the snapshot at txid %d (%d bytes); replica error: %s", f.snap, f.size, firstLine(errLog, "image checksum"))
		})
	}
}
