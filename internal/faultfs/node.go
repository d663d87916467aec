package faultfs

import (
	"context"
	"errors"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is the FUSE face of one inode. It is handle-less: Open returns no file handle, so
// reads, writes (including the kernel's write-back of mmap'd pages, which may arrive after
// the file was closed) and fsyncs all land on the node.
type node struct {
	fs.Inode
	fsys *FS
	in   *inode
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeFlusher    = (*node)(nil)
	_ fs.NodeReleaser   = (*node)(nil)
	_ fs.NodeAllocater  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
	_ fs.NodeOpendirer  = (*node)(nil)
	_ fs.NodeAccesser   = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
)

// lock takes the model lock; it reports EIO once the file system was cut.
func (n *node) lock() syscall.Errno {
	n.fsys.mu.Lock()
	if n.fsys.dead {
		n.fsys.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

func (n *node) unlock() { n.fsys.mu.Unlock() }

func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func (f *FS) fillAttr(c *inode, a *fuse.Attr) {
	a.Ino = c.id
	if c.isDir {
		a.Mode = syscall.S_IFDIR | c.mode
		a.Nlink = 2
		a.Size = 4096
	} else {
		a.Mode = syscall.S_IFREG | c.mode
		a.Nlink = 1
		a.Size = uint64(c.size)
		a.Blocks = (uint64(c.size) + 511) / 512
	}
	a.Blksize = 4096
	t := c.mtime
	a.SetTimes(&t, &t, &t)
	a.Uid = uint32(os.Getuid())
	a.Gid = uint32(os.Getgid())
}

func (n *node) child(ctx context.Context, c *inode, out *fuse.EntryOut) *fs.Inode {
	n.fsys.fillAttr(c, &out.Attr)
	mode := uint32(syscall.S_IFREG)
	if c.isDir {
		mode = syscall.S_IFDIR
	}
	return n.NewInode(ctx, &node{fsys: n.fsys, in: c}, fs.StableAttr{Mode: mode, Ino: c.id})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, e
	}
	defer n.unlock()
	c := n.in.live[name]
	if c == nil {
		return nil, syscall.ENOENT
	}
	return n.child(ctx, c, out), 0
}

func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	n.fsys.fillAttr(n.in, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	if sz, ok := in.GetSize(); ok {
		if n.in.isDir {
			return syscall.EISDIR
		}
		n.fsys.truncate(n.in, int64(sz))
	}
	if m, ok := in.GetMode(); ok {
		n.in.mode = m & 0o7777
	}
	if t, ok := in.GetMTime(); ok {
		n.in.mtime = t
	}
	n.fsys.fillAttr(n.in, &out.Attr)
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, 0, e
	}
	defer n.unlock()
	if flags&syscall.O_TRUNC != 0 && !n.in.isDir {
		n.fsys.truncate(n.in, 0)
	}
	return nil, 0, 0
}

func (n *node) Opendir(ctx context.Context) syscall.Errno { return n.lockCheck() }

func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno { return n.lockCheck() }

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) { return nil, syscall.EINVAL }

func (n *node) lockCheck() syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	n.unlock()
	return 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, nil, 0, e
	}
	defer n.unlock()
	if c := n.in.live[name]; c != nil {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		if c.isDir {
			return nil, nil, 0, syscall.EISDIR
		}
		if flags&syscall.O_TRUNC != 0 {
			n.fsys.truncate(c, 0)
		}
		return n.child(ctx, c, out), nil, 0, 0
	}
	c, err := n.fsys.newFile(name, mode)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	n.in.live[name] = c
	n.in.mtime = time.Now()
	return n.child(ctx, c, out), nil, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, e
	}
	defer n.unlock()
	if n.in.live[name] != nil {
		return nil, syscall.EEXIST
	}
	c := &inode{id: n.fsys.newID(), isDir: true, mode: mode & 0o7777, name: name, mtime: time.Now(),
		live: map[string]*inode{}, durable: map[string]*inode{}}
	n.in.live[name] = c
	n.in.mtime = time.Now()
	return n.child(ctx, c, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return n.remove(name, false) }

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno { return n.remove(name, true) }

// remove takes name out of the directory's live entries: a file for unlink, an empty
// directory for rmdir (dir), with the errno each gives for the other kind.
func (n *node) remove(name string, dir bool) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	c := n.in.live[name]
	switch {
	case c == nil:
		return syscall.ENOENT
	case c.isDir && !dir:
		return syscall.EISDIR
	case !c.isDir && dir:
		return syscall.ENOTDIR
	case dir && len(c.live) > 0:
		return syscall.ENOTEMPTY
	}
	delete(n.in.live, name)
	n.in.mtime = time.Now()
	return 0
}

const (
	renameNoReplace = 1 // RENAME_NOREPLACE
	renameExchange  = 2 // RENAME_EXCHANGE
)

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	src, dst := n.in, np.in
	c := src.live[name]
	if c == nil {
		return syscall.ENOENT
	}
	old := dst.live[newName]
	switch {
	case flags&renameExchange != 0:
		if old == nil {
			return syscall.ENOENT
		}
		src.live[name], dst.live[newName] = old, c
		old.name, c.name = name, newName
	case old == c:
		return 0
	case old != nil && flags&renameNoReplace != 0:
		return syscall.EEXIST
	case old != nil && old.isDir && !c.isDir:
		return syscall.EISDIR
	case old != nil && !old.isDir && c.isDir:
		return syscall.ENOTDIR
	case old != nil && old.isDir && len(old.live) > 0:
		return syscall.ENOTEMPTY
	default:
		delete(src.live, name)
		dst.live[newName] = c
		c.name = newName
	}
	now := time.Now()
	src.mtime, dst.mtime = now, now
	return 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, e
	}
	defer n.unlock()
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if t.in.isDir {
		return nil, syscall.EPERM
	}
	if n.in.live[name] != nil {
		return nil, syscall.EEXIST
	}
	n.in.live[name] = t.in
	n.in.mtime = time.Now()
	return n.child(ctx, t.in, out), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, e
	}
	defer n.unlock()
	names := make([]string, 0, len(n.in.live))
	for k := range n.in.live {
		names = append(names, k)
	}
	sort.Strings(names)
	list := make([]fuse.DirEntry, 0, len(names))
	for _, k := range names {
		c := n.in.live[k]
		mode := uint32(syscall.S_IFREG)
		if c.isDir {
			mode = syscall.S_IFDIR
		}
		list = append(list, fuse.DirEntry{Name: k, Mode: mode, Ino: c.id})
	}
	return fs.NewListDirStream(list), 0
}

func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return nil, e
	}
	defer n.unlock()
	if n.in.isDir {
		return nil, syscall.EISDIR
	}
	k, err := n.fsys.read(n.in, dest, off)
	if err != nil {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if e := n.lock(); e != 0 {
		return 0, e
	}
	defer n.unlock()
	if err := n.fsys.write(n.in, data, off); err != nil {
		return 0, toErrno(err)
	}
	return uint32(len(data)), 0
}

// Fsync serves fsync, fdatasync and msync(MS_SYNC) of files, and fsync of directories.
func (n *node) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	if n.in.isDir {
		return toErrno(n.fsys.syncDir(n.in))
	}
	return toErrno(n.fsys.syncFile(n.in))
}

// Flush (close) and Release make nothing durable.
func (n *node) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return n.lockCheck() }

func (n *node) Release(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

const fallocKeepSize = 1 // FALLOC_FL_KEEP_SIZE

func (n *node) Allocate(ctx context.Context, _ fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if e := n.lock(); e != 0 {
		return e
	}
	defer n.unlock()
	if n.in.isDir {
		return syscall.EISDIR
	}
	if mode&^fallocKeepSize != 0 {
		return syscall.EOPNOTSUPP
	}
	// Reserve the blocks in the durable file now (so ENOSPC shows here, as on a real disk);
	// the size change of mode 0 is pending like any other.
	if err := syscall.Fallocate(int(n.in.store.Fd()), fallocKeepSize, int64(off), int64(size)); err != nil {
		return toErrno(err)
	}
	if mode&fallocKeepSize == 0 && int64(off+size) > n.in.size {
		n.fsys.truncate(n.in, int64(off+size))
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if e := n.lockCheck(); e != 0 {
		return e
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.fsys.backing, &st); err != nil {
		return toErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}
