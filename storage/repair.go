package storage

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Repair before quarantine.
//
// A power cut can leave files that badger created but nobody ever synced: at Open and at every
// memtable rotation badger creates the next WAL (<fid>.mem) and, at Open and at every value-log
// rotation, the next value log (<fid>.vlog), and neither it nor the kernel syncs them before
// they are written. After the cut such a file is 0 bytes long (or shorter than its 20-byte
// header), and badger refuses to open the store ("while opening fid: N err: Create a new
// file"); Open used to move the whole store aside for it, abandoning every queued message.
//
// Nothing acknowledged can be in such a file: every record starts after the 20-byte header,
// and edged acknowledges only after DB.Sync, which syncs the value log and then the WAL (so a
// synced WAL never points into an unsynced value log). repairFiles removes them before
// badger.Open, logs each at WARN with its name and counts it (edged_storage_repairs_total by
// kind, Stats.Space.Repairs). A 0-byte WAL with blocks behind it is the space guard's own
// prepared next WAL (diskfull.go) left by a crash: removed too, silently.
//
// The space guard then syncs what badger creates at Open and at every rotation (the files and
// the directory), so the next cut does not leave such a file at all; repair stays for stores
// written by older versions and for file systems that lose more than they promised.

// repairKinds of edged_storage_repairs_total.
const (
	repairEmptyWAL  = "empty_wal"
	repairEmptyVlog = "empty_vlog"
)

// repairFiles runs before badger.Open on the committer-less store (the directory is locked).
func (s *spaceGuard) repairFiles() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), memExt) || strings.HasSuffix(e.Name(), vlogExt)) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	removed := false
	for _, name := range names {
		p := filepath.Join(s.dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.Size() >= logHeaderSize {
			continue
		}
		kind := repairEmptyWAL
		if strings.HasSuffix(name, vlogExt) {
			kind = repairEmptyVlog
		}
		prepared := false
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && kind == repairEmptyWAL && fi.Size() == 0 && st.Blocks > 0 {
			prepared = true
		}
		if err := os.Remove(p); err != nil {
			s.log.Warn("could not remove a damaged file; badger may refuse the store", "file", name, "error", err)
			continue
		}
		removed = true
		if prepared {
			s.log.Debug("removed the prepared (unused) next write-ahead log", "file", name)
			continue
		}
		s.repairCounts[kind]++
		s.log.Warn("repaired the store before opening it: removed a write-ahead or value-log file that was created but never written (a power cut right after a start or a rotation); it held nothing acknowledged",
			"file", name, "size", fi.Size(), "kind", kind)
	}
	if removed {
		_ = syncDir(s.dir)
	}
}
