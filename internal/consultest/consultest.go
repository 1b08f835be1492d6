// Package consultest runs a real Consul dev agent for tests.
//
// Each Agent is its own single-node cluster on loopback ports picked to be
// free, so tests (and test packages running in parallel) never share state.
// Tests are skipped when no consul binary is available, unless
// LITEFS_REQUIRE_CONSUL=1 says a missing binary is a failure (CI).
package consultest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv, set to 1, turns "consul unavailable" from a skip into a failure.
const RequireEnv = "LITEFS_REQUIRE_CONSUL"

const (
	// startTimeout is how long an agent gets to elect itself leader.
	startTimeout = 30 * time.Second
	// startAttempts covers another process grabbing a picked port between
	// freePorts closing it and the agent binding it.
	startAttempts = 3
	logTailLines  = 40
)

// Agent is a `consul agent -dev` process.
type Agent struct {
	bin     string
	ports   ports
	baseDir string // holds the log and one data dir per run
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
	runs int
}

// Start runs an agent and stops it when t ends. It skips t if no consul
// binary is available (see RequireEnv).
func Start(t testing.TB) *Agent {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("consul binary unavailable and %s=1: %v", RequireEnv, err)
		}
		t.Skipf("consul binary unavailable (set %s=1 to fail instead): %v", RequireEnv, err)
	}
	base := t.TempDir()
	a := &Agent{bin: bin, baseDir: base, logPath: filepath.Join(base, "consul.log")}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul agent log tail (%s):\n%s", a.logPath, a.logTail())
		}
	})

	for attempt := 1; ; attempt++ {
		a.ports, err = freePorts()
		if err != nil {
			t.Fatalf("consultest: %v", err)
		}
		err = a.start()
		if err == nil {
			return a
		}
		if attempt == startAttempts || !errors.Is(err, errExited) {
			t.Fatalf("consultest: %v\nlog tail (%s):\n%s", err, a.logPath, a.logTail())
		}
		t.Logf("consultest: attempt %d: %v; retrying on other ports", attempt, err)
	}
}

// URL is the agent's HTTP API address.
func (a *Agent) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(a.ports.HTTP)
}

// Stop kills the agent and waits for it to exit. It is safe to call more
// than once, and tests use it to simulate Consul going away.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.exit
	a.cmd = nil
}

// Restart starts a stopped agent again on the same ports, with empty state
// (a dev agent keeps everything in memory). It stops a running one first.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	if err := a.start(); err != nil {
		t.Fatalf("consultest: restart: %v\nlog tail (%s):\n%s", err, a.logPath, a.logTail())
	}
}

// errExited means the agent died during startup, typically a port clash.
var errExited = errors.New("consul agent exited during startup")

// start launches the agent on a.ports and waits until it has a leader.
func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.runs++
	dataDir := filepath.Join(a.baseDir, fmt.Sprintf("data-%d", a.runs))
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "=== consultest run %d: %s http=%d\n", a.runs, a.bin, a.ports.HTTP)

	p := a.ports
	cmd := exec.Command(a.bin, "agent", "-dev",
		"-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", strconv.Itoa(p.HTTP),
		// -1 disables a listener; gRPC-TLS would otherwise take the fixed
		// port 8503 and clash between agents.
		"-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1",
		"-serf-lan-port", strconv.Itoa(p.SerfLAN),
		"-serf-wan-port", strconv.Itoa(p.SerfWAN),
		"-server-port", strconv.Itoa(p.Server),
		"-data-dir", dataDir,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1") // no update checks over the network
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.bin, err)
	}
	exit := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exit)
	}()
	a.cmd, a.exit = cmd, exit

	if err := a.waitLeader(exit); err != nil {
		cmd.Process.Kill()
		<-exit
		a.cmd = nil
		return err
	}
	return nil
}

// waitLeader polls /v1/status/leader until the agent reports a leader, it
// exits, or startTimeout passes.
func (a *Agent) waitLeader(exit <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exit:
			return errExited
		default:
		}
		if leaderKnown(client, a.URL()+"/v1/status/leader") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul agent at %s has no leader after %s", a.URL(), startTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaderKnown reports whether url answers with a non-empty leader address.
func leaderKnown(client *http.Client, url string) bool {
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	leader := strings.Trim(strings.TrimSpace(string(body)), `"`)
	return resp.StatusCode == http.StatusOK && leader != ""
}

// logTail returns the end of the agent's log for failure messages.
func (a *Agent) logTail() string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(string(b), logTailLines)
}
