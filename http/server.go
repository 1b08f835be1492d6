package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/replfs/litefs/capture"
	"github.com/replfs/litefs/store"
)

// Node is what the server needs to know about this node's role.
type Node interface {
	IsPrimary() bool
	Candidate() bool
	Hostname() string
	// PrimaryHostname is the primary's hostname, "" on the primary itself
	// or while no primary is known.
	PrimaryHostname() string
	ClusterID() string
	NodeID() string
}

// Snapshotter writes a consistent image of a database; capture.Registry.
type Snapshotter interface {
	Snapshot(ctx context.Context, name string, dst *os.File) (capture.SnapshotInfo, error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	Addr     string
	MountDir string // where /import writes through SQLite
	Store    *store.Store
	Snapshot Snapshotter
	Node     Node
	// HeartbeatInterval defaults to one second.
	HeartbeatInterval time.Duration
	Logger            *slog.Logger
}

// Server is the node's HTTP API.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	ln  net.Listener
	srv *http.Server

	ctx    context.Context // cancelled on Close: ends open streams
	cancel context.CancelFunc
	wg     sync.WaitGroup

	streamsMu sync.Mutex
	streams   map[*streamer]bool // open replica streams, for handoff
}

// NewServer returns a server; Listen starts it.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, streams: map[*streamer]bool{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /stream", s.handleStream)
	mux.HandleFunc("GET /info", s.handleInfo)
	mux.HandleFunc("GET /export", s.handleExport)
	mux.HandleFunc("POST /import", s.handleImport)
	mux.HandleFunc("POST /handoff", s.handleHandoff)
	mux.HandleFunc("POST /promote", s.handlePromote)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	return s
}

// Listen binds the address and serves in the background.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "err", err)
		}
	}()
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close ends every stream and stops the server.
func (s *Server) Close() error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	s.wg.Wait()
	return err
}

// Info is the body of GET /info.
type Info struct {
	ClusterID       string            `json:"clusterID"`
	NodeID          string            `json:"nodeID"`
	Hostname        string            `json:"hostname"`
	IsPrimary       bool              `json:"isPrimary"`
	Candidate       bool              `json:"candidate"`
	PrimaryHostname string            `json:"primaryHostname"`
	Databases       map[string]DBInfo `json:"databases"`
}

// DBInfo is one database in Info.
type DBInfo struct {
	TXID     string `json:"txid"`
	Checksum string `json:"checksum"`
	Pos      string `json:"pos"`
	PageSize uint32 `json:"pageSize"`
	Pages    uint32 `json:"pages"`
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	n := s.cfg.Node
	info := Info{
		ClusterID: n.ClusterID(), NodeID: n.NodeID(), Hostname: n.Hostname(),
		IsPrimary: n.IsPrimary(), Candidate: n.Candidate(), PrimaryHostname: n.PrimaryHostname(),
		Databases: map[string]DBInfo{},
	}
	if info.IsPrimary {
		info.PrimaryHostname = n.Hostname()
	}
	for _, db := range s.cfg.Store.DBs() {
		pos := db.Pos()
		if pos.TXID == 0 {
			continue
		}
		info.Databases[db.Name()] = DBInfo{
			TXID: pos.TXID.String(), Checksum: pos.PostApplyChecksum.String(), Pos: pos.String(),
			PageSize: db.PageSize(), Pages: db.Commit(),
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(info)
}

// httpError writes a plain-text error with a status code and logs it.
func (s *Server) httpError(w http.ResponseWriter, r *http.Request, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if code >= 500 && code != http.StatusServiceUnavailable { // 503: asked the wrong node
		s.log.Error("http", "path", r.URL.Path, "status", code, "err", msg)
	} else {
		s.log.Info("http request refused", "path", r.URL.Path, "status", code, "reason", msg)
	}
	http.Error(w, msg, code)
}
