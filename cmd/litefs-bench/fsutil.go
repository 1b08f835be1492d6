package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Filesystem magic numbers from statfs(2), for the types worth naming.
var fsMagicNames = map[int64]string{
	0x01021994: "tmpfs",
	0x858458f6: "ramfs",
	0xef53:     "ext4",
	0x58465342: "xfs",
	0x9123683e: "btrfs",
	0x2fc12fc1: "zfs",
	0x794c7630: "overlay",
	0x65735546: "fuse",
	0x6969:     "nfs",
}

// isMemFS reports whether a statfs type is memory-backed. Benchmarking on
// one would hide exactly the disk costs (fsync) that litefs adds to.
func isMemFS(fsType int64) bool {
	return fsType == 0x01021994 || fsType == 0x858458f6
}

func statfsType(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Type), nil // int32 on some GOARCHes, hence the conversion
}

// fsTypeName names path's filesystem, or gives its magic number in hex.
func fsTypeName(path string) string {
	t, err := statfsType(path)
	if err != nil {
		return "unknown"
	}
	if name, ok := fsMagicNames[t]; ok {
		return name
	}
	return fmt.Sprintf("0x%x", t)
}

// workDirCandidates lists where the scratch dir may go, best first.
// /var/tmp is normally disk-backed even where /tmp is tmpfs.
func workDirCandidates(flagDir, tempDir, cwd string) []string {
	if flagDir != "" {
		return []string{flagDir}
	}
	return []string{"/var/tmp", tempDir, cwd}
}

// makeWorkDir creates a fresh scratch dir under the first suitable parent.
// An explicit -dir on tmpfs is used with a warning: the user asked for it.
func makeWorkDir(flagDir string, logf func(string, ...any)) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	var errs []error
	for _, parent := range workDirCandidates(flagDir, os.TempDir(), cwd) {
		if flagDir != "" {
			if err := os.MkdirAll(parent, 0o755); err != nil {
				return "", fmt.Errorf("create -dir: %w", err)
			}
		}
		t, err := statfsType(parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if isMemFS(t) && flagDir == "" {
			errs = append(errs, fmt.Errorf("%s is %s", parent, fsMagicNames[t]))
			continue
		}
		if isMemFS(t) {
			logf("warning: -dir %s is on %s; results will not reflect disk costs", parent, fsMagicNames[t])
		}
		dir, err := os.MkdirTemp(parent, "litefs-bench-")
		if err != nil {
			errs = append(errs, fmt.Errorf("create scratch dir: %w", err))
			continue
		}
		logf("scratch dir: %s (%s)", dir, fsTypeName(dir))
		return dir, nil
	}
	return "", fmt.Errorf("no disk-backed scratch dir found, pass -dir: %w", errors.Join(errs...))
}

func cleanupWorkDir(dir string, keep bool, logf func(string, ...any)) {
	if keep {
		logf("kept scratch dir %s", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		logf("warning: remove scratch dir: %v", err)
	}
}

// checkMountDir validates a -mount-dir and says what it is, since pointing
// it at a plain directory is legitimate (harness validation) but must not go
// unnoticed in a real measurement.
func checkMountDir(dir string, logf func(string, ...any)) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("-mount-dir: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("-mount-dir: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("-mount-dir %s is not a directory", abs)
	}
	kind := fsTypeName(abs)
	if kind != "fuse" {
		logf("note: -mount-dir %s is %s, not a FUSE mount (fine for validating the harness)", abs, kind)
	}
	return abs, nil
}

// removeDBFiles deletes databases and their side files, best effort.
func removeDBFiles(paths []string, logf func(string, ...any)) {
	for _, p := range paths {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if err := os.Remove(p + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				logf("warning: %v", err)
			}
		}
	}
}

// mountinfoHas reports whether a /proc/PID/mountinfo text lists mountpoint.
// Field 5 is the mount point, with space, tab, newline and backslash
// escaped as octal.
func mountinfoHas(mountinfo, mountpoint string) bool {
	want := filepath.Clean(mountpoint)
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && unescapeMountinfo(f[4]) == want {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountinfoHasUnder reports whether a mountinfo text lists dir or any
// mount point below it.
func mountinfoHasUnder(mountinfo, dir string) bool {
	root := filepath.Clean(dir)
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == root || strings.HasPrefix(mp, root+"/") {
			return true
		}
	}
	return false
}

// hasMountUnder reports whether dir or anything below it is mounted, so
// that a scratch dir with a mount left in it is kept rather than removed
// through FUSE.
func hasMountUnder(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	return err != nil || mountinfoHasUnder(string(data), dir)
}

// isMounted reports whether dir is currently a mount point.
func isMounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	return err == nil && mountinfoHas(string(data), dir)
}
