package faultfs

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure a mount.
type Options struct {
	// DropFsync, when set, is asked at every fsync of a regular file with the file's current
	// name (base name); true turns that fsync into a no-op that still reports success. It
	// models a program (or a disk cache) that never makes data durable, so a test can prove it
	// notices the loss.
	DropFsync func(name string) bool
	// DropDirFsync is DropFsync for directory fsyncs (name "" for the root).
	DropDirFsync func(name string) bool
	// StrictNames makes a directory entry durable only through an fsync of its directory
	// (POSIX's letter). Without it, every fsync that is not dropped, of a file or a directory,
	// also makes every pending directory entry in the file system durable, as ext4's journal
	// commit does.
	StrictNames bool
}

// Stats are counters of one mount.
type Stats struct {
	Writes        int64 // write requests (write(2) and page write-back from mmap)
	WriteBytes    int64
	Fsyncs        int64 // fsyncs of regular files that made data durable
	DirFsyncs     int64 // fsyncs of directories that made entries durable
	DroppedFsyncs int64 // fsyncs turned into no-ops by DropFsync/DropDirFsync
	// Set by Cut: what it threw away.
	DiscardedBytes int64 // pending (unsynced) file bytes
	DiscardedFiles int64 // files with any pending data or size change
	DiscardedDirs  int64 // directories whose entries differed from their durable entries
}

// FS is one mounted faultfs. Its zero value is not usable; see Mount.
type FS struct {
	backing    string
	store      string
	mountpoint string
	opts       Options
	server     *fuse.Server

	mu     sync.Mutex
	dead   bool
	nextID uint64
	root   *inode
	files  map[uint64]*inode // every regular file inode, for Cut's accounting and cleanup
	stats  Stats
}

// inode is the model of one file or directory: its live state (what processes see) and its
// durable state (what survives a Cut).
type inode struct {
	id    uint64
	isDir bool
	mode  uint32 // permission bits
	name  string // a current live name, for DropFsync and error messages
	mtime time.Time

	// regular files
	store    *os.File // durable content; linked into the backing tree under each durable name
	storeIno uint64   // st_ino of store, to recognise the durable names that refer to it
	shadow   *os.File // pending bytes at their offsets (sparse); nil until the first write
	size     int64    // live size
	dsize    int64    // durable size (the store file's size)
	hideFrom int64    // durable bytes at or beyond this offset were truncated away since the last fsync
	dirty    ranges   // bytes of shadow that are newer than store

	// directories
	live    map[string]*inode
	durable map[string]*inode
	bpath   string // path in the backing tree relative to it ("." for the root); "" if no durable name
}

// Supported says whether FUSE mounts can be made here (root or fusermount3, and /dev/fuse),
// with the reason when they cannot.
func Supported() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("faultfs: /dev/fuse: %w (load the fuse module; apt-get install fuse3)", err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("faultfs: not root and no fusermount3 (apt-get install fuse3)")
	}
	return nil
}

// Mount serves backing at mountpoint (both existing directories). Everything in backing is
// durable at that moment. The store directory backing+".faultfs-store" is created next to it
// (same file system) and removed by Cut.
func Mount(backing, mountpoint string, o Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("faultfs mount: %w", err)
	}
	f := &FS{
		backing:    backing,
		store:      filepath.Join(filepath.Dir(backing), "."+filepath.Base(backing)+".faultfs-store"),
		mountpoint: mountpoint,
		opts:       o,
		nextID:     2, // 1 is the root's
		files:      map[uint64]*inode{},
	}
	if err := os.RemoveAll(f.store); err != nil {
		return nil, fmt.Errorf("faultfs mount: clear store: %w", err)
	}
	if err := os.Mkdir(f.store, 0o700); err != nil {
		return nil, fmt.Errorf("faultfs mount: %w", err)
	}
	f.root = &inode{id: 1, isDir: true, mode: 0o755, bpath: ".", live: map[string]*inode{}, durable: map[string]*inode{}, mtime: time.Now()}
	if err := f.load(f.root, map[uint64]*inode{}); err != nil {
		f.closeFiles()
		_ = os.RemoveAll(f.store)
		return nil, fmt.Errorf("faultfs mount: %w", err)
	}
	zero := time.Duration(0)
	opts := &fs.Options{
		// No attribute or entry caching in the kernel: sizes and names change under us at
		// every request and must come from the model.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:        "faultfs",
			Name:          "faultfs",
			DirectMount:   true,
			DisableXAttrs: true,
		},
	}
	srv, err := fs.Mount(mountpoint, &node{fsys: f, in: f.root}, opts)
	if err != nil {
		f.closeFiles()
		_ = os.RemoveAll(f.store)
		return nil, fmt.Errorf("faultfs mount %s: %w", mountpoint, err)
	}
	f.server = srv
	return f, nil
}

// load reads the durable tree under d.bpath into the model and links every regular file into
// the store. seen maps a backing st_ino to its inode, so hard links stay one inode.
func (f *FS) load(d *inode, seen map[uint64]*inode) error {
	dir := filepath.Join(f.backing, d.bpath)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			c := &inode{id: f.newID(), isDir: true, mode: st.Mode & 0o7777, name: e.Name(), mtime: time.Now(),
				bpath: filepath.Join(d.bpath, e.Name()), live: map[string]*inode{}, durable: map[string]*inode{}}
			if err := f.load(c, seen); err != nil {
				return err
			}
			d.live[e.Name()], d.durable[e.Name()] = c, c
		case syscall.S_IFREG:
			c := seen[st.Ino]
			if c == nil {
				c = &inode{id: f.newID(), mode: st.Mode & 0o7777, name: e.Name(), mtime: time.Unix(st.Mtim.Unix()),
					size: st.Size, dsize: st.Size, hideFrom: math.MaxInt64, storeIno: st.Ino}
				sp := f.storePath(c)
				if err := os.Link(p, sp); err != nil {
					return err
				}
				if c.store, err = os.OpenFile(sp, os.O_RDWR, 0); err != nil {
					return err
				}
				seen[st.Ino] = c
				f.files[c.id] = c
			}
			d.live[e.Name()], d.durable[e.Name()] = c, c
		}
	}
	return nil
}

func (f *FS) newID() uint64 { f.nextID++; return f.nextID - 1 }

func (f *FS) storePath(c *inode) string {
	return filepath.Join(f.store, strconv.FormatUint(c.id, 10))
}

// Mountpoint is where the file system is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Backing is the directory that holds the durable state.
func (f *FS) Backing() string { return f.backing }

// Stats returns the counters so far.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Cut is the power cut: it throws away everything not yet durable and unmounts. Kill the
// processes that use the mount first. Afterwards the backing directory holds exactly the
// durable state; Mount it again to go on. Cut is idempotent and returns the final Stats.
func (f *FS) Cut() (Stats, error) {
	f.mu.Lock()
	if f.dead {
		st := f.stats
		f.mu.Unlock()
		return st, nil
	}
	f.dead = true
	for _, c := range f.files {
		if len(c.dirty) > 0 || c.size != c.dsize || c.hideFrom < c.dsize {
			f.stats.DiscardedFiles++
			f.stats.DiscardedBytes += c.dirty.bytes()
		}
	}
	f.countDirs(f.root, map[*inode]bool{})
	st := f.stats
	f.mu.Unlock()

	// Abort the FUSE connection first: the kernel then fails every request still queued or
	// in flight and drops the mount's page cache, so nothing can wait on a server that is
	// going away. Best effort: the dead flag already makes late requests record nothing.
	abortConnection(f.mountpoint)
	err := unmount(f.mountpoint)
	done := make(chan struct{})
	go func() { f.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		// The server loop ends when the kernel drops the connection, which a lazy unmount
		// does once no process holds the mount. Say so instead of hanging the test.
		err = errors.Join(err, fmt.Errorf("faultfs cut: server of %s still running 30s after the unmount (a process still uses the mount?)", f.mountpoint))
	}
	f.mu.Lock()
	f.closeFiles()
	f.mu.Unlock()
	if rerr := os.RemoveAll(f.store); rerr != nil {
		err = errors.Join(err, fmt.Errorf("faultfs cut: remove store: %w", rerr))
	}
	return st, err
}

func (f *FS) countDirs(d *inode, seen map[*inode]bool) {
	if seen[d] {
		return
	}
	seen[d] = true
	if !sameEntries(d.live, d.durable) {
		f.stats.DiscardedDirs++
	}
	for _, c := range d.live {
		if c.isDir {
			f.countDirs(c, seen)
		}
	}
}

func sameEntries(a, b map[string]*inode) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (f *FS) closeFiles() {
	for _, c := range f.files {
		if c.store != nil {
			_ = c.store.Close()
		}
		if c.shadow != nil {
			_ = c.shadow.Close()
		}
	}
}

// unmount detaches the mount lazily: the kernel drops it even if a file is still open, and a
// dead process's dirty pages are never written anywhere.
func unmount(mnt string) error {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		if out, err := exec.Command(p, "-u", "-z", mnt).CombinedOutput(); err == nil {
			return nil
		} else if os.Geteuid() != 0 {
			return fmt.Errorf("faultfs: fusermount3 -uz %s: %w: %s", mnt, err, out)
		}
	}
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("faultfs: unmount %s: %w", mnt, err)
	}
	return nil
}

// abortConnection writes to the fusectl abort file of the FUSE mount at mnt. It finds the
// connection through /proc/self/mountinfo, not stat, which would block on a stuck server.
func abortConnection(mnt string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[4] != mnt {
			continue
		}
		_, minor, ok := strings.Cut(fields[2], ":")
		if !ok {
			return
		}
		const ctl = "/sys/fs/fuse/connections"
		if _, err := os.Stat(filepath.Join(ctl, minor)); err != nil && os.Geteuid() == 0 {
			_ = syscall.Mount("fusectl", ctl, "fusectl", 0, "")
		}
		_ = os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
		return
	}
}

// Unmount detaches a mount left behind at mnt (for test cleanup after a failure); it ignores
// "not mounted".
func Unmount(mnt string) { _ = unmount(mnt) }

// ---- the model's operations; all called with f.mu held ----

func (f *FS) newFile(name string, mode uint32) (*inode, error) {
	c := &inode{id: f.newID(), mode: mode & 0o7777, name: name, hideFrom: math.MaxInt64, mtime: time.Now()}
	st, err := os.OpenFile(f.storePath(c), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	var s syscall.Stat_t
	if err := syscall.Fstat(int(st.Fd()), &s); err != nil {
		st.Close()
		return nil, err
	}
	c.store, c.storeIno = st, s.Ino
	f.files[c.id] = c
	return c, nil
}

func (f *FS) read(c *inode, dest []byte, off int64) (int, error) {
	if off >= c.size {
		return 0, nil
	}
	end := min(off+int64(len(dest)), c.size)
	buf := dest[:end-off]
	clear(buf)
	if visible := min(c.dsize, c.hideFrom); off < visible {
		if _, err := c.store.ReadAt(buf[:min(end, visible)-off], off); err != nil && err != io.EOF {
			return 0, err
		}
	}
	i := sort.Search(len(c.dirty), func(k int) bool { return c.dirty[k].end > off })
	for ; i < len(c.dirty) && c.dirty[i].start < end; i++ {
		s, e := max(c.dirty[i].start, off), min(c.dirty[i].end, end)
		if _, err := c.shadow.ReadAt(buf[s-off:e-off], s); err != nil && err != io.EOF {
			return 0, err
		}
	}
	return len(buf), nil
}

func (f *FS) write(c *inode, data []byte, off int64) error {
	if c.shadow == nil {
		sh, err := os.OpenFile(f.storePath(c)+".pending", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		c.shadow = sh
	}
	if _, err := c.shadow.WriteAt(data, off); err != nil {
		return err
	}
	c.dirty = c.dirty.add(off, off+int64(len(data)))
	c.size = max(c.size, off+int64(len(data)))
	c.mtime = time.Now()
	f.stats.Writes++
	f.stats.WriteBytes += int64(len(data))
	return nil
}

func (f *FS) truncate(c *inode, size int64) {
	if size < c.size {
		c.dirty = c.dirty.clip(size)
		c.hideFrom = min(c.hideFrom, size)
	}
	c.size = size
	c.mtime = time.Now()
}

// syncFile makes c's live content its durable content.
func (f *FS) syncFile(c *inode) error {
	if f.opts.DropFsync != nil && f.opts.DropFsync(c.name) {
		f.stats.DroppedFsyncs++
		return nil
	}
	if c.hideFrom < c.dsize {
		if err := c.store.Truncate(c.hideFrom); err != nil {
			return err
		}
		c.dsize = c.hideFrom
	}
	buf := make([]byte, 0)
	for _, sp := range c.dirty {
		for o := sp.start; o < sp.end; {
			n := min(sp.end-o, 1<<20)
			if int64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			b := buf[:n]
			if _, err := c.shadow.ReadAt(b, o); err != nil && err != io.EOF {
				return err
			}
			if _, err := c.store.WriteAt(b, o); err != nil {
				return err
			}
			o += n
		}
	}
	if cur := max(c.dsize, c.dirty.end()); c.size != cur {
		if err := c.store.Truncate(c.size); err != nil {
			return err
		}
	}
	c.dsize = c.size
	if !f.opts.StrictNames {
		if err := f.commitNames(); err != nil {
			return err
		}
	}
	c.dirty = nil
	c.hideFrom = math.MaxInt64
	if c.shadow != nil {
		if err := c.shadow.Truncate(0); err != nil {
			return err
		}
	}
	f.stats.Fsyncs++
	return nil
}

func (r ranges) end() int64 {
	if len(r) == 0 {
		return 0
	}
	return r[len(r)-1].end
}

// syncDir makes d's live entries its durable entries and, if d has a durable name, applies
// them to the backing tree.
func (f *FS) syncDir(d *inode) error {
	if f.opts.DropDirFsync != nil && f.opts.DropDirFsync(d.name) {
		f.stats.DroppedFsyncs++
		return nil
	}
	f.stats.DirFsyncs++
	if !f.opts.StrictNames {
		return f.commitNames()
	}
	return f.commitDir(d)
}

func (f *FS) commitDir(d *inode) error {
	if sameEntries(d.live, d.durable) {
		return nil
	}
	d.durable = make(map[string]*inode, len(d.live))
	for k, v := range d.live {
		d.durable[k] = v
	}
	if d.bpath == "" {
		return nil
	}
	return f.apply(d)
}

// commitNames makes every pending directory entry durable: the journal commit. Parents go
// first, so a new directory has its backing path before its entries are applied.
func (f *FS) commitNames() error {
	var dirs []*inode
	f.walkLive(f.root, func(d *inode) { dirs = append(dirs, d) }, map[*inode]bool{})
	for _, d := range dirs {
		if err := f.commitDir(d); err != nil {
			return err
		}
	}
	return nil
}

// walkLive visits the directories reachable through live entries, parents before children.
func (f *FS) walkLive(d *inode, fn func(*inode), seen map[*inode]bool) {
	if seen[d] {
		return
	}
	seen[d] = true
	fn(d)
	for _, c := range d.live {
		if c.isDir {
			f.walkLive(c, fn, seen)
		}
	}
}

// apply makes the backing directory of d hold exactly d's durable entries.
func (f *FS) apply(d *inode) error {
	dir := filepath.Join(f.backing, d.bpath)
	for name, c := range d.durable {
		p := filepath.Join(dir, name)
		rel := filepath.Join(d.bpath, name)
		if !c.isDir {
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err == nil && st.Ino == c.storeIno {
				continue
			}
			if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
				f.forget(rel)
				if err := os.RemoveAll(p); err != nil {
					return err
				}
			}
			tmp := filepath.Join(dir, ".faultfs-tmp-"+strconv.FormatUint(c.id, 10))
			_ = os.Remove(tmp)
			if err := os.Link(f.storePath(c), tmp); err != nil {
				return err
			}
			if err := os.Rename(tmp, p); err != nil {
				return err
			}
			continue
		}
		if c.bpath == rel {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			f.forget(rel)
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
		if c.bpath != "" {
			// A durable directory moves: it cannot have two names.
			if err := os.Rename(filepath.Join(f.backing, c.bpath), p); err != nil {
				return err
			}
			f.dropDurableName(c)
			f.rebase(c, rel)
			continue
		}
		if err := os.Mkdir(p, os.FileMode(c.mode)|0o700); err != nil {
			return err
		}
		c.bpath = rel
		if err := f.apply(c); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, ok := d.durable[e.Name()]; ok {
			continue
		}
		rel := filepath.Join(d.bpath, e.Name())
		f.forget(rel)
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// forget marks every directory at or under the backing path rel as having no durable name.
func (f *FS) forget(rel string) {
	f.walkDirs(f.root, func(d *inode) {
		if d.bpath == rel || (d.bpath != "" && len(d.bpath) > len(rel) && d.bpath[:len(rel)+1] == rel+"/") {
			d.bpath = ""
		}
	}, map[*inode]bool{})
}

// dropDurableName removes the durable entry that named directory c at its old backing path.
func (f *FS) dropDurableName(c *inode) {
	parent, name := filepath.Dir(c.bpath), filepath.Base(c.bpath)
	f.walkDirs(f.root, func(d *inode) {
		if d.bpath == parent && d.durable[name] == c {
			delete(d.durable, name)
		}
	}, map[*inode]bool{})
}

// rebase moves c's backing path to rel, and its durable subdirectories with it.
func (f *FS) rebase(c *inode, rel string) {
	old := c.bpath
	f.walkDirs(f.root, func(d *inode) {
		if d.bpath == old {
			d.bpath = rel
		} else if d.bpath != "" && len(d.bpath) > len(old) && d.bpath[:len(old)+1] == old+"/" {
			d.bpath = rel + d.bpath[len(old):]
		}
	}, map[*inode]bool{})
}

// walkDirs visits every directory reachable through live or durable entries.
func (f *FS) walkDirs(d *inode, fn func(*inode), seen map[*inode]bool) {
	if seen[d] {
		return
	}
	seen[d] = true
	fn(d)
	for _, m := range []map[string]*inode{d.live, d.durable} {
		for _, c := range m {
			if c.isDir {
				f.walkDirs(c, fn, seen)
			}
		}
	}
}
