//go:build race

package broker

// raceDetector: the race detector slows everything 5-10x; latency bounds scale with it.
const raceDetector = true
