package consultest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// BinaryEnv overrides where the consul binary is found.
const BinaryEnv = "LITEFS_CONSUL_BIN"

// buildOnce runs tests/consul/build.sh at most once per test binary: it is
// cheap once cached, but the first build takes minutes and must not run in
// parallel from several tests.
var buildOnce = sync.OnceValues(buildBinary)

// Binary returns the path of the consul binary: $LITEFS_CONSUL_BIN if set,
// else the pinned build from tests/consul/build.sh, else `consul` on PATH.
func Binary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", BinaryEnv, err)
		}
		return p, nil
	}
	return buildOnce()
}

func buildBinary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "tests", "consul", "build.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	buildErr := cmd.Run()
	if buildErr == nil {
		if p := strings.TrimSpace(stdout.String()); p != "" {
			return p, nil
		}
		buildErr = errors.New("printed no path")
	}
	// Fall back to an installed consul (e.g. a machine without network to
	// build); the version may differ from the pinned one.
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s: %w: %s", script, buildErr, tail(stderr.String(), 20))
}

// repoRoot walks up from this source file to the directory with go.mod.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("consultest: cannot locate own source file")
	}
	for dir := filepath.Dir(file); ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("consultest: no go.mod above %s", file)
		}
		dir = parent
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
