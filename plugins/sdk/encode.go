package sdk

import "encoding/binary"

// AppendResult appends r encoded in the ABI's result format (ABI.md, "The
// result") to dst: the 20-byte header, then the reason, new key, new range
// end and new value that are set, back to back. Lengths of unchanged parts
// are 0xFFFFFFFF, for every verdict. It allocates only when dst lacks
// capacity. It does not judge r: finish does that before the wasm glue
// sends a result.
func AppendResult(dst []byte, r Result) []byte {
	dst = append(dst, byte(r.verdict), 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.reason)))
	for _, s := range [...]span{r.key, r.end, r.value} {
		if s.set {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(s.n))
		} else {
			dst = binary.LittleEndian.AppendUint32(dst, unchangedLen)
		}
	}
	dst = append(dst, r.reason...)
	for _, s := range [...]span{r.key, r.end, r.value} {
		if s.set {
			dst = append(dst, scratch[s.off:s.off+s.n]...)
		}
	}
	return dst
}
