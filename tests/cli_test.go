package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountRunsCommand checks `litefs mount -- cmd`: the command runs with
// the mount ready, the node exits with the command's exit code, and the
// mount is gone afterwards.
func TestMountRunsCommand(t *testing.T) {
	n := newNode(t)
	script := `sqlite3 "$0" "CREATE TABLE t(x); INSERT INTO t VALUES(1);" && cat "$0-pos" && exit 7`
	cmd := exec.Command(litefsBin, "mount", "-config", filepath.Join(n.Dir, "litefs.yml"), "--", "sh", "-c", script, n.Path("cmd.db"))
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit: %v (want status 7); stdout %q", err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "0000000000000002/") {
		t.Fatalf("position printed by the command: %q", got)
	}
	if mounted(n.MntDir) {
		t.Fatal("mount still present after the command exited")
	}
}

// TestConfigErrors checks that a bad config stops the node with a message
// naming the problem, before anything is mounted.
func TestConfigErrors(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	for _, tt := range []struct{ yml, want string }{
		{"fuse:\n  dir: /tmp/x\n  dri: 1\n", `line 3: unknown key "dri"`},
		{"fuse:\n  dir: " + dir + "/m\ndata:\n  dir: " + dir + "/d\n", "lease.type is required"},
	} {
		path := filepath.Join(dir, "litefs.yml")
		if err := os.WriteFile(path, []byte(tt.yml), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(litefsBin, "mount", "-config", path).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Fatalf("config %q: err=%v output %q, want it to mention %q", tt.yml, err, out, tt.want)
		}
	}
}
