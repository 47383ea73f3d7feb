//go:build wasip1

package sdk

import "unsafe"

// hostLog is the host import storegate.log(level, ptr, len).
//
//go:wasmimport storegate log
func hostLog(level int32, ptr unsafe.Pointer, n uint32)

// writeLog hands msg's bytes to the host in place.
func writeLog(level Level, msg string) {
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}
