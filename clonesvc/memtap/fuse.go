package memtap

import (
	"context"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// attrTimeout is how long the kernel keeps the file's name and
// attributes: they never change while the tap is mounted.
const attrTimeout = time.Hour

// mount serves t's RAM file in mnt.
//
// The options make a fault read exactly the pages it touches: read-ahead
// of one page (MaxReadAhead) and requests of at most one page (MaxWrite
// also sets max_read and max_pages). FOPEN_KEEP_CACHE and no direct I/O
// keep what was read in the page cache, shared by every QEMU mapping the
// file, across opens; ExplicitDataCacheControl keeps the kernel from
// dropping it on an attribute change.
func mount(ctx context.Context, mnt string, t *Tap) (*fuse.Server, error) {
	timeout := attrTimeout
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:                   "snowflock-memtap",
			Name:                     "memtap",
			MaxReadAhead:             PageSize,
			MaxWrite:                 PageSize,
			AllowOther:               t.cfg.AllowOther,
			DirectMount:              true,
			ExplicitDataCacheControl: true,
			DisableXAttrs:            true,
		},
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memtap: mount %s: %w", mnt, err)
	}
	// Mounting waits only for the kernel's INIT request, which our own
	// server answers: it does not block for long.
	srv, err := fs.Mount(mnt, &rootNode{tap: t}, opts)
	if err != nil {
		return nil, fmt.Errorf("memtap: mount %s: %w (needs /dev/fuse and root, or fusermount)", mnt, err)
	}
	if err := ctx.Err(); err != nil {
		unmount(srv, mnt, unmountWait)
		return nil, fmt.Errorf("memtap: mount %s: %w", mnt, err)
	}
	return srv, nil
}

// unmount takes the mount down, waiting up to wait for the kernel to let
// go of it, then, as a last resort, detaches it lazily: it goes away with
// its last user.
func unmount(srv *fuse.Server, mnt string, wait time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- srv.Unmount() }()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
	case <-time.After(wait):
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		if out, ferr := exec.Command("fusermount", "-u", "-z", mnt).CombinedOutput(); ferr != nil {
			return fmt.Errorf("memtap: unmount %s: %w (fusermount: %v: %s)", mnt, err, ferr, out)
		}
	}
	return nil
}

// rootNode is the mount's directory; it holds the RAM file.
type rootNode struct {
	fs.Inode
	tap *Tap
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

func (r *rootNode) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &memNode{tap: r.tap}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(FileName, ch, false)
}

// memNode is the RAM file: read-only, of the guest RAM's size. It may be
// opened for writing (QEMU opens mem-path O_RDWR even with share=off and
// never writes), but writes, truncation and hole punching fail.
type memNode struct {
	fs.Inode
	tap *Tap
}

var (
	_ fs.NodeOpener    = (*memNode)(nil)
	_ fs.NodeGetattrer = (*memNode)(nil)
	_ fs.NodeReader    = (*memNode)(nil)
	_ fs.NodeWriter    = (*memNode)(nil)
	_ fs.NodeSetattrer = (*memNode)(nil)
	_ fs.NodeAllocater = (*memNode)(nil)
	_ fs.NodeFsyncer   = (*memNode)(nil)
	_ fs.NodeStatfser  = (*memNode)(nil)
	_ fs.NodeReleaser  = (*memNode)(nil)
)

func (n *memNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *memNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *memNode) attr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Size = uint64(n.tap.cfg.Size)
	a.Blocks = a.Size / 512
	a.Blksize = PageSize
	a.Nlink = 1
}

func (n *memNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	got, err := n.tap.read(ctx, dest, off)
	if err != nil {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *memNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (n *memNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok && size != uint64(n.tap.cfg.Size) {
		return syscall.EROFS
	}
	if in.Valid&^(fuse.FATTR_SIZE|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		return syscall.EROFS
	}
	n.attr(&out.Attr)
	return 0
}

// Allocate refuses fallocate, hole punching in particular: a clone's
// discarded RAM must never reach the file other clones map.
func (n *memNode) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *memNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno { return 0 }

func (n *memNode) Release(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

func (n *memNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = PageSize
	out.Frsize = PageSize
	out.NameLen = 255
	return 0
}
