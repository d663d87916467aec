// Package faultfs is a power-cut file system for tests: a FUSE file system that passes through
// to a backing directory but keeps everything written and not yet made durable apart, so that
// Cut can throw it away the way a power loss does. kill -9 alone cannot show a missing fsync:
// the page cache survives the process. Under faultfs it does not survive the Cut.
//
// # The model
//
//   - File data and file size become durable only through fsync (or fdatasync, or
//     msync(MS_SYNC) on a shared mapping, which the kernel turns into FUSE writes followed by
//     FUSE_FSYNC) of that file. Until then writes, truncates and fallocate's size changes are
//     pending. This is stricter than ext4, where ftruncate is a journaled metadata change that
//     any later fsync commits.
//   - Directory entries (create, mkdir, link, unlink, rmdir, rename) are pending until a
//     journal commit: by default any fsync of a file or directory makes every pending entry in
//     the file system durable, as ext4 (data=ordered) and XFS do in practice. With
//     Options.StrictNames an entry becomes durable only through fsync of the directory that
//     holds it (POSIX's letter). A rename between two directories then needs both to be
//     synced; if only the destination is, a file keeps both names; a directory moves.
//   - A name made durable by a directory fsync refers to the inode's durable content: a file
//     created, extended with ftruncate and mmap'd, whose directory was synced but not the file
//     itself, comes back 0 bytes long after a Cut.
//   - fsync of a file whose name is not durable keeps the data with the inode; the data appears
//     once a directory fsync makes a name durable, and is gone with the inode if none does.
//   - close, munmap, flock and a clean process exit make nothing durable.
//
// ext4 with data=ordered is more forgiving on sizes (an fsync commits other files' ftruncate
// too) and on renames (auto_da_alloc flushes data on a rename over an existing file). Code that
// survives this model survives ext4's as far as the modelled features go; the reverse is not
// true.
//
// # Cut
//
// Cut marks the file system dead (every later request fails with EIO and records nothing, so
// dirty pages the kernel writes back after the processes were killed are dropped), detaches
// the mount lazily and waits for the FUSE server to finish. The backing directory then holds
// exactly the durable state; Mount on it again to go on. Processes using the mount must be
// killed (SIGKILL) before Cut, as a power cut stops them.
//
// # What is not modelled
//
//   - Torn writes: a write or a synced range is either wholly pending or wholly durable; a
//     sector half written at the instant of the cut does not exist here.
//   - Reordering within pending data: a Cut drops all pending writes of a file, never a subset
//     (a real disk may have persisted some unsynced pages and not others). Likewise pending
//     directory changes are dropped as a whole per directory.
//   - Metadata other than names and sizes (mode, times, ownership, xattrs) is applied at once
//     and never rolled back; symlinks, device nodes and sockets are not supported (ENOTSUP).
//     Entries of those kinds found in the backing directory at Mount are hidden.
//   - fallocate reserves space in the backing file at once (mode 0 or KEEP_SIZE); the size
//     change of mode 0 is pending like a truncate. Punching holes is not supported.
//   - Full disks: writes are kept in a shadow file next to the store, so ENOSPC shows up where
//     the backing file system is full, not where the modelled disk would be.
//   - Swapping two directories by rename in one directory fsync is not supported.
//   - Direct I/O: the mount does not use direct_io, so mmap works; the kernel page cache sits
//     above the file system as it does on a real disk and is lost with the mount at Cut.
//
// # mmap, measured
//
// Stores into a shared mapping reach the file system only as page write-back (FUSE_WRITE of
// whole 4 KiB pages). msync(MS_SYNC) writes the dirty pages back and then sends FUSE_FSYNC, so
// it makes them durable like fsync. Pages stored after the last msync are written back at
// munmap/close or later and stay pending: a mapping written, msync'd, written again, unmapped
// and closed arrived as 3 page writes and 1 fsync, and the last store was gone after the Cut
// (TestMmapMsync). Never touch the mount through a mapping from the process that serves it: a
// page fault there waits for a server goroutine that the Go runtime may have stopped for GC.
//
// # Layout
//
// Durable file contents live in a store directory next to the backing directory (same file
// system), one file per inode, hard-linked into the backing tree under each durable name, so
// an fsync writes into the inode that the durable names already refer to. Pending writes live
// in a sparse shadow file per inode plus an in-memory list of dirty ranges. The store is
// removed at Cut, which also deletes inodes that never got a durable name, as fsck would.
package faultfs
