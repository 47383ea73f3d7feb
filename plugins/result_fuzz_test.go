package plugins

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"
)

// encodeResult is the guest side of a hook result (ABI.md, "The
// result"), the inverse of decodeResult: the header, then the reason and
// the parts a mutate changes. For continue and deny the three mutate
// lengths are written as unchanged, as the SDKs do.
func encodeResult(r result) []byte {
	b := make([]byte, resultHeader, resultHeader+len(r.reason)+len(r.key)+len(r.end)+len(r.value))
	b[0] = byte(r.verdict)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(r.reason)))
	b = append(b, r.reason...)
	for i, p := range []struct {
		has  bool
		part []byte
	}{{r.hasKey, r.key}, {r.hasEnd, r.end}, {r.hasValue, r.value}} {
		l := uint32(unchanged)
		if r.verdict == VerdictMutate && p.has {
			l = uint32(len(p.part))
			b = append(b, p.part...)
		}
		binary.LittleEndian.PutUint32(b[8+4*i:], l)
	}
	return b
}

// validResults are well-formed results of every verdict and every mix of
// unchanged, empty and rewritten mutate parts.
func validResults() [][]byte {
	out := [][]byte{
		encodeResult(result{}),
		make([]byte, resultHeader), // continue with zero mutate lengths
		encodeResult(result{verdict: VerdictDeny, reason: []byte("keys under /secret are not allowed")}),
		encodeResult(result{verdict: VerdictDeny}),
		encodeResult(result{verdict: VerdictDeny, reason: []byte("caf\xc3\xa9 \xff\xfe not UTF-8")}),
		encodeResult(result{verdict: VerdictDeny, reason: bytes.Repeat([]byte("\xe2\x82\xac"), maxMessage/3+2)}), // a cut inside a character
		encodeResult(result{verdict: VerdictDeny, reason: bytes.Repeat([]byte{0xff}, maxMessage+7)}),
		encodeResult(result{verdict: VerdictMutate}), // a mutate that changes nothing
	}
	parts := []struct {
		has  bool
		part []byte
	}{{false, nil}, {true, []byte{}}, {true, []byte("/tenant/a/app/x")}}
	for _, k := range parts {
		for _, e := range parts {
			for _, v := range parts {
				out = append(out, encodeResult(result{verdict: VerdictMutate,
					key: k.part, hasKey: k.has, end: e.part, hasEnd: e.has, value: v.part, hasValue: v.has}))
			}
		}
	}
	return out
}

// within reports whether part is a view of b's bytes (an empty part is
// anywhere).
func within(b, part []byte) bool {
	if len(part) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(unsafe.SliceData(part)))
	return hi >= lo && hi+uintptr(len(part)) <= lo+uintptr(len(b))
}

// checkDecode decodes b and checks what decodeResult promises: a failure
// is malformed, returns the zero result and says so in a bounded message
// that quotes none of the guest's bytes; a result has a known verdict,
// views of b that add up to exactly b, capacities that end at each part
// (so that nothing appended to one reaches the next), a reason only on
// deny and parts only on mutate, and encodes back to b (except the mutate
// lengths, which continue and deny ignore). Its reason, as the caller
// sees it, is valid UTF-8 of at most maxMessage bytes.
func checkDecode(t *testing.T, b []byte) {
	r, f := decodeResult(b)
	if f != nil {
		if f.Kind != FailMalformed {
			t.Fatalf("failure of kind %s: %v", f.Kind, f)
		}
		if f.FailsClosed() {
			t.Fatalf("a malformed result fails closed: %v", f)
		}
		if len(f.Error()) > 200 {
			t.Fatalf("failure message of %d bytes: %.300q", len(f.Error()), f.Error())
		}
		if r.verdict != 0 || r.reason != nil || r.key != nil || r.end != nil || r.value != nil || r.mutates() {
			t.Fatalf("a failure returned a result: %s", describe(r))
		}
		return
	}
	if len(b) < resultHeader {
		t.Fatalf("decoded a %d-byte result", len(b))
	}
	switch r.verdict {
	case VerdictContinue, VerdictDeny, VerdictMutate:
	default:
		t.Fatalf("decoded verdict %d", r.verdict)
	}
	if r.verdict != VerdictDeny && len(r.reason) != 0 {
		t.Fatalf("%s with a %d-byte reason", r.verdict, len(r.reason))
	}
	if r.verdict != VerdictMutate && (r.mutates() || r.key != nil || r.end != nil || r.value != nil) {
		t.Fatalf("%s with mutate parts: %s", r.verdict, describe(r))
	}
	total := resultHeader + len(r.reason)
	for _, p := range []struct {
		name string
		has  bool
		part []byte
	}{{"reason", true, r.reason}, {"key", r.hasKey, r.key}, {"range end", r.hasEnd, r.end}, {"value", r.hasValue, r.value}} {
		if !p.has && p.part != nil {
			t.Fatalf("unchanged %s is %q", p.name, p.part)
		}
		if !within(b, p.part) {
			t.Fatalf("%s (%d bytes) is not within the %d-byte result", p.name, len(p.part), len(b))
		}
		if p.name != "reason" {
			if cap(p.part) != len(p.part) {
				t.Fatalf("%s has %d bytes but capacity %d", p.name, len(p.part), cap(p.part))
			}
			total += len(p.part)
		}
	}
	if total != len(b) {
		t.Fatalf("parts add up to %d bytes of a %d-byte result", total, len(b))
	}
	again := encodeResult(r)
	if r.verdict == VerdictMutate {
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encodes as %x, decoded from %x", again, b)
		}
	} else if !bytes.Equal(again[:8], b[:8]) || !bytes.Equal(again[resultHeader:], b[resultHeader:]) {
		// continue and deny ignore the mutate lengths (bytes 8 to 20)
		t.Fatalf("re-encodes as %x, decoded from %x", again, b)
	}
	if r.verdict == VerdictDeny {
		s := reasonText(r.reason)
		if !utf8.ValidString(s) || len(s) > maxMessage || s == "" {
			t.Fatalf("reason text of %d bytes, valid UTF-8 %v", len(s), utf8.ValidString(s))
		}
		if len(r.reason) > 0 && len(r.reason) <= maxMessage && utf8.Valid(r.reason) && s != string(r.reason) {
			t.Fatalf("a valid reason changed: %q to %q", r.reason, s)
		}
		if len(r.reason) > maxMessage && utf8.Valid(r.reason) && !strings.HasPrefix(string(r.reason), s) {
			t.Fatal("a long valid reason was not cut to a prefix of itself")
		}
	}
}

// describe is r's verdict and the lengths of its parts (-1: unchanged).
func describe(r result) string {
	l := func(has bool, b []byte) int {
		if !has {
			return -1
		}
		return len(b)
	}
	return fmt.Sprintf("%s, reason %d, key %d, range end %d, value %d", r.verdict, len(r.reason),
		l(r.hasKey, r.key), l(r.hasEnd, r.end), l(r.hasValue, r.value))
}

// FuzzDecodeResult feeds arbitrary bytes to the decoder of a guest's
// result, seeded with well-formed results, every truncation of them and
// a few classic corruptions (lengths near 2^32, reserved bytes, verdicts
// past mutate, a trailing byte).
func FuzzDecodeResult(f *testing.F) {
	for _, b := range validResults() {
		f.Add(b)
		for n := range len(b) {
			if len(b) <= 128 || n <= resultHeader+1 || n >= len(b)-4 {
				f.Add(b[:n])
			}
		}
		f.Add(append(b[:len(b):len(b)], 0))
	}
	corrupt := func(set func(b []byte)) []byte {
		b := encodeResult(result{verdict: VerdictMutate, key: []byte("/k"), hasKey: true, value: []byte("v"), hasValue: true})
		set(b)
		return b
	}
	f.Add(corrupt(func(b []byte) { b[0] = 3 }))
	f.Add(corrupt(func(b []byte) { b[0] = 255 }))
	f.Add(corrupt(func(b []byte) { b[2] = 1 }))
	f.Add(corrupt(func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 1) }))
	f.Add(corrupt(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 0xFFFFFFFE) }))
	f.Add(corrupt(func(b []byte) {
		binary.LittleEndian.PutUint32(b[8:], 0x80000000)
		binary.LittleEndian.PutUint32(b[12:], 0x80000000)
		binary.LittleEndian.PutUint32(b[16:], 0x80000000)
	}))
	f.Add(corrupt(func(b []byte) { b[0] = byte(VerdictDeny); binary.LittleEndian.PutUint32(b[4:], 0xFFFFFFFF) }))
	f.Fuzz(checkDecode)
}

// TestDecodeResultAllocs: decoding allocates nothing for a well-formed
// result, and a bounded amount, whatever the lengths a header claims, for
// a malformed one (only the failure's description).
func TestDecodeResultAllocs(t *testing.T) {
	for _, b := range validResults() {
		if n := testing.AllocsPerRun(100, func() { _, _ = decodeResult(b) }); n != 0 {
			t.Errorf("decoding %x: %.0f allocations", b, n)
		}
	}
	huge := encodeResult(result{verdict: VerdictMutate})
	for i := 8; i < resultHeader; i += 4 {
		binary.LittleEndian.PutUint32(huge[i:], 0xFFFFFFFE)
	}
	for _, b := range [][]byte{huge, huge[:7], {9}, bytes.Repeat([]byte{0xff}, 1<<20)} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			if _, f := decodeResult(b); f == nil {
				t.Fatalf("decoded %x", b[:min(len(b), 32)])
			}
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 512 {
			t.Errorf("a malformed %d-byte result: %d bytes allocated per decode", len(b), per)
		}
	}
}

// TestReasonText: the caller gets at most maxMessage bytes of valid UTF-8,
// cut at a character boundary.
func TestReasonText(t *testing.T) {
	euro := "\u20ac" // 3 bytes
	for _, tc := range []struct {
		in   string
		want func(string) bool
	}{
		{"", func(s string) bool { return s == "(no reason given)" }},
		{"plain", func(s string) bool { return s == "plain" }},
		{"a\xffb", func(s string) bool { return s == "a\uFFFDb" }},
		{strings.Repeat(euro, 2000), func(s string) bool { return s == strings.Repeat(euro, maxMessage/3) }},
		{strings.Repeat("\xff", 3*maxMessage), func(s string) bool { return s == "\uFFFD" }},
		{strings.Repeat("a\xff", maxMessage), func(s string) bool { return s == strings.Repeat("a\uFFFD", maxMessage/4) }},
		{strings.Repeat("a", maxMessage-1) + euro, func(s string) bool { return s == strings.Repeat("a", maxMessage-1) }},
	} {
		got := reasonText([]byte(tc.in))
		if !tc.want(got) || !utf8.ValidString(got) || len(got) > maxMessage {
			t.Errorf("reasonText(%.40q…, %d bytes) = %.40q… (%d bytes)", tc.in, len(tc.in), got, len(got))
		}
	}
}
