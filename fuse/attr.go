package fuse

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"syscall"
	"time"

	"bazil.org/fuse"
	"golang.org/x/sys/unix"
)

func fillAttr(a *fuse.Attr, st *syscall.Stat_t) {
	a.Valid = cacheTTL
	a.Inode = st.Ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime = time.Unix(st.Atim.Unix())
	a.Mtime = time.Unix(st.Mtim.Unix())
	a.Ctime = time.Unix(st.Ctim.Unix())
	a.Mode = fileMode(st.Mode)
	a.Nlink = uint32(st.Nlink)
	a.Uid, a.Gid = st.Uid, st.Gid
	a.Rdev = uint32(st.Rdev)
	a.BlockSize = uint32(st.Blksize)
}

func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		mode |= os.ModeDir
	case syscall.S_IFLNK:
		mode |= os.ModeSymlink
	case syscall.S_IFIFO:
		mode |= os.ModeNamedPipe
	case syscall.S_IFSOCK:
		mode |= os.ModeSocket
	case syscall.S_IFCHR:
		mode |= os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFBLK:
		mode |= os.ModeDevice
	}
	if m&syscall.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

func direntType(t fs.FileMode) fuse.DirentType {
	switch {
	case t.IsDir():
		return fuse.DT_Dir
	case t&fs.ModeSymlink != 0:
		return fuse.DT_Link
	case t&fs.ModeNamedPipe != 0:
		return fuse.DT_FIFO
	case t&fs.ModeSocket != 0:
		return fuse.DT_Socket
	case t.IsRegular():
		return fuse.DT_File
	}
	return fuse.DT_Unknown
}

// errno unwraps an error to the errno the kernel should see. Anything that
// is not an OS error (a failed LTX write, a checksum problem) becomes EIO so
// SQLite reports an I/O error instead of believing the commit succeeded.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}

const omitTime = unix.UTIME_OMIT

func timespec(t time.Time, now bool) syscall.Timespec {
	if now {
		return syscall.Timespec{Nsec: unix.UTIME_NOW}
	}
	return syscall.NsecToTimespec(t.UnixNano())
}

func utimensat(path string, ts []syscall.Timespec) error {
	uts := []unix.Timespec{{Sec: ts[0].Sec, Nsec: ts[0].Nsec}, {Sec: ts[1].Sec, Nsec: ts[1].Nsec}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, uts, unix.AT_SYMLINK_NOFOLLOW)
}

// Extended attributes are not supported. Answering ENOSYS (rather than
// ENOTSUP) makes the kernel stop asking: otherwise it looks up
// security.capability before every single write, doubling the round trips
// of a commit.
func (n *Node) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	return syscall.ENOSYS
}

// Listxattr: see Getxattr.
func (n *Node) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	return syscall.ENOSYS
}

// Setxattr: see Getxattr.
func (n *Node) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	return syscall.ENOSYS
}

// Removexattr: see Getxattr.
func (n *Node) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	return syscall.ENOSYS
}

// openFile opens a backing file with a raw open(2). os.OpenFile registers
// every descriptor with the runtime poller, which costs several system calls
// that a regular file never needs, on a path taken per SQLite open, journal
// creation and fsync.
func openFile(path string, flags int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
