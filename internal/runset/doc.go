// Package runset owns the running set of a component's long-lived parts (a bridge's
// forwarders, a hardware manager's serial ports and bus manager): one goroutine per part, each
// under its own context derived from the component's Run context, so a reload can stop one part
// and wait until it has let go of its device or outbox before its successor starts, while the
// others keep running. Once the component stops, the set starts nothing more and its stop
// returns only after every part's goroutine has returned.
package runset
