package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	logTailBytes = 4096
	litefsPkg    = "github.com/replfs/litefs/cmd/litefs"
)

// litefsProc is a litefs child process serving mnt.
type litefsProc struct {
	bin     string
	name    string // hostname, for messages
	cmd     *exec.Cmd
	started time.Time // just before the process was started
	mnt     string
	logPath string
	logFile *os.File
	exited  chan struct{} // closed once cmd.Wait returns
	waitErr error         // valid after exited is closed
}

// resolveLitefs picks the binary: the -litefs flag, else a litefs next to
// this executable (as left by `go build -o bin/ ./cmd/...`), else a fresh
// `go build` of the module's cmd/litefs into the scratch dir.
func resolveLitefs(ctx context.Context, flagPath, work string, logf func(string, ...any)) (string, error) {
	if flagPath != "" {
		abs, err := filepath.Abs(flagPath)
		if err != nil {
			return "", fmt.Errorf("-litefs: %w", err)
		}
		if !isExecutable(abs) {
			return "", fmt.Errorf("-litefs %s: not an executable file", abs)
		}
		return abs, nil
	}
	if exe, err := os.Executable(); err == nil {
		if cand := filepath.Join(filepath.Dir(exe), "litefs"); isExecutable(cand) {
			logf("using %s (next to this binary; pass -litefs to choose another)", cand)
			return cand, nil
		}
	}
	out := filepath.Join(work, "litefs")
	logf("building %s ...", litefsPkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, litefsPkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (run from inside the module or pass -litefs): %w\n%s", litefsPkg, err, msg)
	}
	return out, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort asks the kernel for an unused TCP port. Another process could
// grab it before litefs binds it; litefs then fails to start and says so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// yamlString quotes s for YAML. A JSON string is a valid YAML
// double-quoted scalar, and this escapes anything a path may contain.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // marshalling a string cannot fail
	return string(b)
}

// nodeSpec describes one litefs node the bench starts: its files live
// under dir (mnt/, data/, litefs.yml, litefs.log).
type nodeSpec struct {
	dir       string
	hostname  string
	port      int
	candidate bool   // true: a static primary advertising its own URL
	primary   string // replicas: the primary's API URL
	env       []string
}

func (n nodeSpec) mnt() string  { return filepath.Join(n.dir, "mnt") }
func (n nodeSpec) data() string { return filepath.Join(n.dir, "data") }
func (n nodeSpec) url() string  { return fmt.Sprintf("http://127.0.0.1:%d", n.port) }

// litefsConfig renders the single-node config the bench runs litefs with.
func litefsConfig(mnt, data string, port int) (string, error) {
	return nodeConfig(mnt, data, nodeSpec{hostname: "bench", port: port, candidate: true})
}

// nodeConfig renders a static-lease config: a candidate is the primary and
// advertises its own URL; a replica names the primary's URL instead.
func nodeConfig(mnt, data string, n nodeSpec) (string, error) {
	// litefs expands $VAR in config values; a '$' in a path would be
	// silently rewritten, so refuse it instead.
	if strings.Contains(mnt+data, "$") {
		return "", fmt.Errorf("paths must not contain '$' (litefs expands env vars): %q, %q", mnt, data)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", n.port)
	adv := n.primary
	if n.candidate {
		adv = "http://" + addr
	}
	if adv == "" {
		return "", errors.New("a replica needs the primary's URL")
	}
	// A replica reconnects quickly: the bench starts it right after the
	// primary and must not wait out the default 1s back-off.
	return fmt.Sprintf(`fuse:
  dir: %s
data:
  dir: %s
lease:
  type: "static"
  candidate: %v
  hostname: %s
  advertise-url: %s
  reconnect-delay: "100ms"
http:
  addr: %s
`, yamlString(mnt), yamlString(data), n.candidate, yamlString(n.hostname), yamlString(adv), yamlString(addr)), nil
}

// startLitefs starts the single-node primary of the main workloads in work.
func startLitefs(ctx context.Context, bin, work string, port int, logf func(string, ...any)) (*litefsProc, error) {
	return startNode(ctx, bin, nodeSpec{dir: work, hostname: "bench", port: port, candidate: true}, readyPoll, logf)
}

// readyPoll is how often startNode looks for the mount by default.
const readyPoll = 50 * time.Millisecond

// startNode writes n's config, starts `litefs mount` and waits until the
// mount answers, looking every poll. On failure the child is stopped and
// its log tail shown.
func startNode(ctx context.Context, bin string, n nodeSpec, poll time.Duration, logf func(string, ...any)) (*litefsProc, error) {
	p := &litefsProc{
		bin:     bin,
		name:    n.hostname,
		mnt:     n.mnt(),
		logPath: filepath.Join(n.dir, "litefs.log"),
		exited:  make(chan struct{}),
	}
	for _, d := range []string{n.dir, p.mnt, n.data()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	conf, err := nodeConfig(p.mnt, n.data(), n)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(n.dir, "litefs.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	if p.logFile, err = os.Create(p.logPath); err != nil {
		return nil, fmt.Errorf("create litefs log: %w", err)
	}
	// A file, not a pipe: litefs must never block on a full pipe, and the
	// log survives for -keep.
	p.cmd = exec.Command(bin, "mount", "-config", confPath)
	p.cmd.Stdout, p.cmd.Stderr = p.logFile, p.logFile
	if len(n.env) > 0 {
		p.cmd.Env = append(os.Environ(), n.env...)
	}
	// Own process group: ^C reaches only the bench, which then shuts
	// litefs down in order instead of racing its unmount with open DBs.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		p.logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	logf("started litefs %s pid %d: %s mount -config %s (log: %s)", n.hostname, p.cmd.Process.Pid, bin, confPath, p.logPath)
	if err := p.waitReady(ctx, readyTimeout, poll); err != nil {
		if stopErr := p.shutdown(logf); stopErr != nil {
			logf("warning: %v", stopErr)
		}
		return nil, err
	}
	return p, nil
}

// waitReady polls for a readable .lag file in the mount. The read runs in
// its own goroutine because a half-initialised FUSE mount can block it.
func (p *litefsProc) waitReady(ctx context.Context, timeout, poll time.Duration) error {
	ready := make(chan struct{})
	stopPoll := make(chan struct{})
	defer close(stopPoll)
	go func() {
		lag := filepath.Join(p.mnt, ".lag")
		for {
			if _, err := os.ReadFile(lag); err == nil {
				close(ready)
				return
			}
			select {
			case <-stopPoll:
				return
			case <-time.After(poll):
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	start := time.Now()
	select {
	case <-ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited before the mount was ready (%v); log tail:\n%s", p, p.waitErr, p.logTail())
	case <-timer.C:
		return fmt.Errorf("%s mount not ready after %v (%s unreadable); log tail:\n%s", p, timeout, filepath.Join(p.mnt, ".lag"), p.logTail())
	case <-ctx.Done():
		return fmt.Errorf("waiting for litefs mount after %v: %w", time.Since(start).Round(time.Millisecond), ctx.Err())
	}
}

// logTail returns the end of the child's log, for error messages.
func (p *litefsProc) logTail() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailBytes {
		if _, err := f.Seek(-logTailBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(seek %s: %v)", p.logPath, err)
		}
	}
	b, _ := io.ReadAll(f)
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// String names the process in messages: "litefs" or "litefs (replica)".
func (p *litefsProc) String() string {
	if p.name == "" || p.name == "bench" {
		return "litefs"
	}
	return "litefs (" + p.name + ")"
}

func (p *litefsProc) pid() int {
	return p.cmd.Process.Pid
}

func (p *litefsProc) binPath() string {
	if p == nil {
		return ""
	}
	return p.bin
}

// exitedNow reports whether the child has exited, without blocking.
func (p *litefsProc) exitedNow() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stop ends litefs after the benchmark. A child that died before we asked
// is an error, since later measurements may have hit a dead mount. Safe on
// a nil receiver.
func (p *litefsProc) stop(logf func(string, ...any)) error {
	if p == nil {
		return nil
	}
	var early error
	if p.exitedNow() {
		early = fmt.Errorf("%s exited unexpectedly (%v); log tail:\n%s", p, p.waitErr, p.logTail())
	}
	return errors.Join(early, p.shutdown(logf))
}

// shutdown sends SIGTERM, then SIGKILL after stopTimeout, then forces an
// unmount if the mount outlived the process. Fine on an exited child.
func (p *litefsProc) shutdown(logf func(string, ...any)) error {
	defer p.logFile.Close()
	var errs []error
	if !p.exitedNow() {
		errs = append(errs, p.terminate(logf))
	}
	if isMounted(p.mnt) {
		errs = append(errs, forceUnmount(p.mnt, logf))
	}
	return errors.Join(errs...)
}

func (p *litefsProc) terminate(logf func(string, ...any)) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %s: %w", p, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	logf("%s did not exit %v after SIGTERM; sending SIGKILL", p, stopTimeout)
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL %s: %w", p, err)
	}
	<-p.exited
	return fmt.Errorf("%s needed SIGKILL; log tail:\n%s", p, p.logTail())
}

// forceUnmount is the last resort when litefs left its mount behind.
func forceUnmount(mnt string, logf func(string, ...any)) error {
	attempts := [][]string{
		{"fusermount3", "-u", mnt},
		{"fusermount", "-u", mnt},
		{"umount", "-l", mnt},
	}
	for _, a := range attempts {
		out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
		if err == nil && !isMounted(mnt) {
			logf("unmounted %s with %s", mnt, a[0])
			return nil
		}
		logf("%s: %v %s", strings.Join(a, " "), err, strings.TrimSpace(string(out)))
	}
	return fmt.Errorf("%s is still mounted; unmount it by hand", mnt)
}
