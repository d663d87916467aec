// Package procs owns the number of Go processors (GOMAXPROCS) while edged runs.
//
// At a light, steady load a gateway receives one message at a time with the whole process idle
// in between. With more than one processor every such message readies the connection's writer
// goroutine while a second processor is idle, so the Go scheduler wakes another thread (a futex
// wake and two context switches) that spins, finds nothing and sleeps again: on a 2-core
// gateway that spinning thread takes the core the next hop of the message needs. One
// processor removes that, and the message goes through the broker on one thread as it does in
// a single-threaded broker. Under heavy load one processor caps throughput, so the controller
// watches the process's CPU time and gives the runtime all its processors back as soon as one
// processor is busy, and takes them away again only after a quiet second.
//
// The package owns that decision and the goroutine that makes it (Controller.Run, stopped by
// its context). It must not own what the processors run: it never looks at the broker or the
// store, only at the CPU time the kernel charges the process.
package procs
