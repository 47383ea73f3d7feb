// Package linearizable holds end-to-end tests that check, with the porcupine
// linearizability checker, that histories of concurrent clients going
// through storegate replicas stay linearizable while processes are killed,
// paused and cut off: the gateway must never turn a fault into a wrong
// value or a success that did not happen.
package linearizable
