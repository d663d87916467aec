package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// A read can meet damage badger cannot step past: bytes flipped in a table's index or block
// metadata that its parser trips over (a panic, recovered by Read) before any checksum is
// checked. Every later read of that range trips again, so the outbox would be stuck for good.
// The way out is the salvage that a store badger refuses already gets (salvage.go): it reads
// the tables block by block with their checksums, copies what is readable and counts the rest.
// So a read that trips leaves a marker file in the data dir; the next Open moves the store
// aside and salvages it; and until then Ping fails, so /healthz says so and the systemd
// watchdog restarts edged, which is the next Open.
const salvageRequestFile = "SALVAGE-REQUESTED"

// ErrSalvageRequested: the store holds damage reads cannot get past; the next Open salvages
// it (restart edged).
var ErrSalvageRequested = errors.New("store damaged where reads cannot get past it: salvage requested at the next start (restart edged)")

type salvageRequest struct {
	set atomic.Bool
}

// requestSalvage writes the marker (fsynced, with its directory) once and logs why.
func (db *DB) requestSalvage(why string) {
	if db.opts.NoRecover || db.salvageReq.set.Swap(true) {
		return
	}
	dir := filepath.Clean(db.opts.Dir)
	p := filepath.Join(dir, salvageRequestFile)
	err := writeSynced(p, []byte(why+"\n"))
	if err == nil {
		err = syncDir(dir)
	}
	db.integ.badgerErrors.Inc()
	db.log.Error("store damaged where reads cannot get past it: it will be moved aside and salvaged at the next start; edged reports unhealthy until restarted",
		"dir", dir, "why", why, "marker", p, "marker_err", err)
}

// salvageRequested reports a marker left by requestSalvage in dir.
func salvageRequested(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, salvageRequestFile))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

func writeSynced(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirSynced is os.MkdirAll that also fsyncs the parent of every directory it creates: a new
// directory's name is durable only once its parent is synced (POSIX; ext4 commits it with its
// journal a few seconds later), and a power cut in that window after the very first start
// would take the whole data dir, acked messages included, with it.
func mkdirSynced(dir string) error {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !os.IsExist(err) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}
