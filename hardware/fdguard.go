package hardware

import (
	"fmt"
	"reflect"
	"sync"

	"go.bug.st/serial"
)

// fdsPerPort: the port itself and the two ends of go.bug.st/serial's close-signal pipe.
const fdsPerPort = 3

// openMu serialises opens, so the low fds one port releases are taken by that port's open and
// not by another port's.
var openMu sync.Mutex

// openSerial opens path, handing it the reserved low fds, and refuses a port whose fds would
// make go.bug.st/serial panic. reserved is updated: emptied on success (the port now holds those
// numbers), refilled on failure.
func openSerial(path string, mode *serial.Mode, reserved *[]int) (serial.Port, error) {
	openMu.Lock()
	defer openMu.Unlock()
	releaseFDs(*reserved)
	*reserved = nil
	sp, err := serial.Open(path, mode)
	if err == nil {
		for _, fd := range portFDs(sp) {
			if fd >= fdSetSize {
				sp.Close()
				sp, err = nil, fmt.Errorf("open %s: got fd %d >= %d, which go.bug.st/serial cannot select on (too many open files in edged; will retry)", path, fd, fdSetSize)
				break
			}
		}
	}
	if err != nil {
		*reserved = reserveFDs(fdsPerPort)
		return nil, err
	}
	return sp, nil
}

// closeSerial closes a port opened by openSerial and takes its (low) fd numbers back into the
// reserve.
func closeSerial(sp serial.Port, reserved *[]int) error {
	openMu.Lock()
	defer openMu.Unlock()
	err := sp.Close()
	if len(*reserved) == 0 {
		*reserved = reserveFDs(fdsPerPort)
	}
	return err
}

// portFDs reads the fds of a go.bug.st/serial v1.8.0 unix port (fields handle and
// closeSignal.rd/wr) by reflection; any other shape yields nil and the check is skipped, leaving
// the recover in the read loop as the guard.
func portFDs(p serial.Port) []int {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	v = v.Elem()
	var fds []int
	if h := v.FieldByName("handle"); h.IsValid() && h.CanInt() {
		fds = append(fds, int(h.Int()))
	}
	if cs := v.FieldByName("closeSignal"); cs.IsValid() && cs.Kind() == reflect.Pointer && !cs.IsNil() && cs.Elem().Kind() == reflect.Struct {
		for _, f := range []string{"rd"} { // the write end is never selected on
			if x := cs.Elem().FieldByName(f); x.IsValid() && x.CanInt() {
				fds = append(fds, int(x.Int()))
			}
		}
	}
	return fds
}
