package http

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Handoffer is the part of the node that moves the primary role.
type Handoffer interface {
	StopWrites()
	ResumeWrites()
	Handoff(ctx context.Context, hostname string) error
	// PrimaryURL is the current primary's API URL, as a replica knows it.
	PrimaryURL(ctx context.Context) (url, hostname string, ok bool)
}

// handoffCatchUpTimeout bounds how long writes pause for a handoff.
const handoffCatchUpTimeout = 10 * time.Second

// handleHandoff serves POST /handoff?hostname=H on the primary: writes stop,
// H's stream catches up, and the lease is handed to H. Writes pause for
// that long and nothing committed is lost.
func (s *Server) handleHandoff(w http.ResponseWriter, r *http.Request) {
	host := r.URL.Query().Get("hostname")
	h, ok := s.cfg.Node.(Handoffer)
	switch {
	case host == "":
		s.httpError(w, r, http.StatusBadRequest, "hostname is required")
		return
	case !ok || !s.cfg.Node.IsPrimary():
		s.httpError(w, r, http.StatusServiceUnavailable, "not the primary")
		return
	}
	h.StopWrites()
	deadline := time.Now().Add(handoffCatchUpTimeout)
	for !s.caughtUp(host) {
		if time.Now().After(deadline) || r.Context().Err() != nil {
			h.ResumeWrites()
			s.httpError(w, r, http.StatusServiceUnavailable, "handoff to %s: it did not catch up within %s", host, handoffCatchUpTimeout)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := h.Handoff(r.Context(), host); err != nil {
		h.ResumeWrites()
		s.httpError(w, r, http.StatusInternalServerError, "handoff to %s: %v", host, err)
		return
	}
	s.log.Info("handed the primary role off", "to", host)
	fmt.Fprintf(w, "handed off to %s\n", host)
}

// handlePromote serves POST /promote on a candidate replica: it asks the
// primary to hand the lease over and waits until this node holds it.
func (s *Server) handlePromote(w http.ResponseWriter, r *http.Request) {
	n := s.cfg.Node
	h, ok := n.(Handoffer)
	switch {
	case n.IsPrimary():
		fmt.Fprintln(w, "already the primary")
		return
	case !ok || !n.Candidate():
		s.httpError(w, r, http.StatusBadRequest, "this node is not a candidate for primary")
		return
	}
	primaryURL, _, ok := h.PrimaryURL(r.Context())
	if !ok {
		s.httpError(w, r, http.StatusServiceUnavailable, "no primary to take over from")
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost,
		strings.TrimRight(primaryURL, "/")+"/handoff?hostname="+url.QueryEscape(n.Hostname()), nil)
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.httpError(w, r, http.StatusBadGateway, "ask primary for handoff: %v", err)
		return
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.httpError(w, r, http.StatusBadGateway, "primary refused handoff: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
		return
	}
	deadline := time.Now().Add(handoffCatchUpTimeout)
	for !n.IsPrimary() {
		if time.Now().After(deadline) {
			s.httpError(w, r, http.StatusGatewayTimeout, "primary released the lease but this node did not acquire it")
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(w, "promoted")
}
