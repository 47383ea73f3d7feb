package gate_test

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"github.com/storegate/storegate/gate"
)

// These fuzz targets compare KeyRange.Prefix, Contains, Overlaps and
// PrefixEnd with two oracles:
//
//   - an analytic model, exact for any bytes: a range is the half-open
//     interval [lo, hi) of byte strings in bytewise order, hi a string or
//     +∞ (a single key K is [K, K+"\x00"), K+"\x00" being the least
//     string after K; End "\x00" is [Key, +∞); otherwise [Key, End), empty
//     when End <= Key). The keys starting with p are [p, succ(p)), succ(p)
//     the least string above all of them (+∞ when p is empty or all 0xff).
//   - brute force: every key of a finite universe, decided by the plain
//     definition of etcd ranges (inEtcdRange), for inputs projected onto a
//     small alphabet. The universe is not all keys, so each brute-force
//     check below says why it is nonetheless exact: it always names a
//     witness key the universe holds.
//
// Endpoints and prefixes are projected onto endpointAlphabet, at most
// maxProjected (3) bytes long. The universe is every string over
// universeAlphabet (endpointAlphabet and each of its bytes + 1, so that
// succ of any prefix of an endpoint is in it) of length <= L, L one more
// than the longest endpoint or prefix of the case (so that K+"\x00" and
// p+"\x00" are in it too): at most 4 bytes, 7381 keys. (Endpoints of 4
// bytes would need a universe of 66430 keys, and fuzz ten times slower;
// the model, vouched for on the projected cases, also judges the raw
// inputs, of any length and bytes.)

var endpointAlphabet = []byte{0x00, 0x01, '/', 'a', 0xfe, 0xff}

var universeAlphabet = []byte{0x00, 0x01, 0x02, '/', '0', 'a', 'b', 0xfe, 0xff}

const maxProjected = 3

// universe returns every string over universeAlphabet of length <= l
// (l <= maxProjected+1), shortest first.
func universe(l int) [][]byte {
	keys, ends := universeKeys()
	return keys[:ends[l]]
}

var universeKeys = sync.OnceValues(func() ([][]byte, []int) {
	keys := [][]byte{{}}
	ends := []int{1}
	level := [][]byte{{}}
	for range maxProjected + 1 {
		var next [][]byte
		for _, k := range level {
			for _, c := range universeAlphabet {
				next = append(next, append(bytes.Clone(k), c))
			}
		}
		keys = append(keys, next...)
		ends = append(ends, len(keys))
		level = next
	}
	return keys, ends
})

// project maps b onto endpointAlphabet (bytes already in it are kept),
// cut to maxProjected bytes.
func project(b []byte) []byte {
	if len(b) > maxProjected {
		b = b[:maxProjected]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if bytes.IndexByte(endpointAlphabet, c) >= 0 {
			out[i] = c
		} else {
			out[i] = endpointAlphabet[int(c)%len(endpointAlphabet)]
		}
	}
	return out
}

// inEtcdRange is the definition of etcd ranges, key by key.
func inEtcdRange(key, end, k []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(k, key)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(k, key) >= 0
	default:
		return bytes.Compare(key, k) <= 0 && bytes.Compare(k, end) < 0
	}
}

// bound is an exclusive upper bound: a string, or +∞.
type bound struct {
	s   []byte
	inf bool
}

// above reports k < b.
func (b bound) above(k []byte) bool { return b.inf || bytes.Compare(k, b.s) < 0 }

// atMost reports b <= c.
func (b bound) atMost(c bound) bool {
	switch {
	case c.inf:
		return true
	case b.inf:
		return false
	}
	return bytes.Compare(b.s, c.s) <= 0
}

func (b bound) equal(c bound) bool { return b.atMost(c) && c.atMost(b) }

// succ is the least string above every string starting with p: drop p's
// trailing 0xff bytes and add one to the last byte left; +∞ if none is.
func succ(p []byte) bound {
	n := len(p)
	for n > 0 && p[n-1] == 0xff {
		n--
	}
	if n == 0 {
		return bound{inf: true}
	}
	s := slices.Clone(p[:n])
	s[n-1]++
	return bound{s: s}
}

// interval is the model of a range: [lo, hi).
type interval struct {
	lo []byte
	hi bound
}

func model(key, end []byte) interval {
	switch {
	case len(end) == 0:
		return interval{key, bound{s: append(slices.Clone(key), 0)}}
	case len(end) == 1 && end[0] == 0:
		return interval{key, bound{inf: true}}
	}
	return interval{key, bound{s: end}}
}

func (iv interval) empty() bool { return !iv.hi.above(iv.lo) }

func (iv interval) has(k []byte) bool { return bytes.Compare(k, iv.lo) >= 0 && iv.hi.above(k) }

// overlaps: [lo, hi) and [q, succ(q)) meet iff the larger lower bound lies
// below both upper bounds.
func (iv interval) overlaps(q []byte) bool {
	m := iv.lo
	if bytes.Compare(q, m) > 0 {
		m = q
	}
	return !iv.empty() && iv.hi.above(m) && succ(q).above(m)
}

// cover is the longest P every key of a non-empty range starts with: lo is
// in the range, so P is a prefix of lo, and [lo, hi) lies within
// [P, succ(P)) iff hi <= succ(P).
func (iv interval) cover() []byte {
	for i := len(iv.lo); ; i-- {
		if iv.hi.atMost(succ(iv.lo[:i])) {
			return iv.lo[:i]
		}
	}
}

// exact: [lo, hi) = [P, succ(P)) iff lo = P and hi = succ(P) (two
// non-empty half-open intervals are equal iff their bounds are).
func (iv interval) exact() bool { return !iv.empty() && iv.hi.equal(succ(iv.lo)) }

func clip(b []byte) []byte {
	if len(b) > 256 {
		return b[:256]
	}
	return b
}

// keyRangeSeeds: empty keys, all-0xff keys, End < Key, End = Key, End
// "\x00", prefix ranges and their near misses.
var keyRangeSeeds = [][2]string{
	{"", ""}, {"", "\x00"}, {"a", ""}, {"a", "\x00"}, {"\xff", "\x00"}, {"\xff\xff", "\x00"},
	{"\xff", ""}, {"\xff\x00", "\x00"}, {"a\xff", "b"}, {"a", "b"}, {"/app/", "/app0"},
	{"b", "a"}, {"a", "a"}, {"a\x00", "a"}, {"", "a"}, {"a", "a\x00"}, {"a\x00", "b"},
	{"ab", "b"}, {"a", "\x01"}, {"\x00", "\x00\x00"}, {"\xfe\xff", "\xff"}, {"\x00", "\x01"},
	{"a/", "a0\x00"}, {"\xff\xfe", "\xff\xff"}, {"\xff\xff\xff\xff", "\x00"},
}

// FuzzKeyRangePrefix checks Prefix, Contains and PrefixEnd of a range.
func FuzzKeyRangePrefix(f *testing.F) {
	for _, s := range keyRangeSeeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, key, end []byte) {
		// The projected case first: brute force vouches for the model
		// there, which then judges the raw bytes alone.
		pk, pe := project(key), project(end)
		checkPrefixBrute(t, pk, pe)
		checkPrefixModel(t, pk, pe)
		checkPrefixModel(t, clip(key), clip(end))
	})
}

// FuzzKeyRangeOverlaps checks Overlaps(prefix) and PrefixEnd(prefix).
func FuzzKeyRangeOverlaps(f *testing.F) {
	for _, s := range keyRangeSeeds {
		for _, q := range []string{"", "a", "\xff", "a\xff", "/app/", "b", "\x00", s[0], s[1]} {
			f.Add([]byte(s[0]), []byte(s[1]), []byte(q))
		}
	}
	f.Fuzz(func(t *testing.T, key, end, prefix []byte) {
		pk, pe, pq := project(key), project(end), project(prefix)
		checkOverlapsBrute(t, pk, pe, pq)
		checkOverlapsModel(t, pk, pe, pq)
		checkOverlapsModel(t, clip(key), clip(end), clip(prefix))
	})
}

// unchanged fails if a call modified the range it was given.
func unchanged(t *testing.T, what string, r gate.KeyRange, key, end []byte) {
	t.Helper()
	if !bytes.Equal(r.Key, key) || !bytes.Equal(r.End, end) {
		t.Fatalf("%s modified the range: now [%q, %q), was [%q, %q)", what, r.Key, r.End, key, end)
	}
}

// checkPrefixEnd compares PrefixEnd(p) with succ(p) ("\x00" for +∞).
func checkPrefixEnd(t *testing.T, p []byte) {
	t.Helper()
	in := bytes.Clone(p)
	got := gate.PrefixEnd(p)
	if !bytes.Equal(p, in) {
		t.Fatalf("PrefixEnd(%q) modified its argument to %q", in, p)
	}
	want := succ(p)
	if want.inf && !bytes.Equal(got, []byte{0}) || !want.inf && !bytes.Equal(got, want.s) {
		t.Fatalf("PrefixEnd(%q) = %q, want %q (inf %v)", p, got, want.s, want.inf)
	}
}

func checkPrefixModel(t *testing.T, key, end []byte) {
	t.Helper()
	k0, e0 := bytes.Clone(key), bytes.Clone(end)
	r := gate.KeyRange{Key: key, End: end}
	iv := model(key, end)
	p, exact := r.Prefix()
	unchanged(t, "Prefix", r, k0, e0)
	p = bytes.Clone(p)
	if iv.empty() {
		// Every P is a common prefix of no key: only exactness is defined
		// ({k : k starts with P} always holds P).
		if exact {
			t.Fatalf("[%q, %q) is empty, yet Prefix() = (%q, exact)", key, end, p)
		}
	} else {
		want := iv.cover()
		if !bytes.HasPrefix(key, p) || !iv.hi.atMost(succ(p)) {
			t.Fatalf("[%q, %q): Prefix() = %q, which some key of the range does not start with (longest common prefix %q)",
				key, end, p, want)
		}
		if !bytes.Equal(p, want) {
			t.Fatalf("[%q, %q): Prefix() = %q, not the longest prefix every key starts with, %q", key, end, p, want)
		}
		if exact != iv.exact() {
			t.Fatalf("[%q, %q): Prefix() = (%q, exact %v), want exact %v", key, end, p, exact, iv.exact())
		}
	}
	for _, k := range [][]byte{key, end, append(bytes.Clone(key), 0), p} {
		if got, want := r.Contains(k), inEtcdRange(key, end, k); got != want {
			t.Fatalf("[%q, %q).Contains(%q) = %v, want %v", key, end, k, got, want)
		}
	}
	unchanged(t, "Contains", r, k0, e0)
	checkPrefixEnd(t, key)
	checkPrefixEnd(t, end)
	checkPrefixEnd(t, p)
}

func checkPrefixBrute(t *testing.T, key, end []byte) {
	t.Helper()
	r := gate.KeyRange{Key: key, End: end}
	iv := model(key, end)
	l := max(len(key), len(end)) + 1
	u := universe(l)
	p, exact := r.Prefix()
	p = bytes.Clone(p)
	pe := gate.PrefixEnd(p)
	var in [][]byte
	for _, k := range u {
		want := inEtcdRange(key, end, k)
		if iv.has(k) != want {
			t.Fatalf("model broken: [%q, %q) has %q: %v, definition says %v", key, end, k, !want, want)
		}
		if got := r.Contains(k); got != want {
			t.Fatalf("[%q, %q).Contains(%q) = %v, want %v", key, end, k, got, want)
		}
		if want {
			in = append(in, k)
		}
		// PrefixEnd(p) bounds exactly the keys starting with p.
		inPE := bytes.Compare(k, p) >= 0 && (bytes.Equal(pe, []byte{0}) || bytes.Compare(k, pe) < 0)
		if inPE != bytes.HasPrefix(k, p) {
			t.Fatalf("PrefixEnd(%q) = %q: %q in [p, PrefixEnd) is %v, starts with p is %v", p, pe, k, inPE, !inPE)
		}
	}
	// The universe holds key, which is in the range unless it is empty.
	if len(in) == 0 {
		if !iv.empty() {
			t.Fatalf("model broken: [%q, %q) holds no key of the universe, yet the model finds it non-empty", key, end)
		}
		if exact {
			t.Fatalf("[%q, %q) is empty, yet Prefix() = (%q, exact)", key, end, p)
		}
		return
	}
	// Longest common prefix, by brute force. key is in the range, so it is
	// a prefix of key. For q a prefix of key, the range holds a key not
	// starting with q iff it overruns [q, succ(q)), iff it holds succ(q),
	// which the universe holds: so "every key of the universe in the range
	// starts with q" is exact.
	all := func(q []byte) bool {
		for _, k := range in {
			if !bytes.HasPrefix(k, q) {
				return false
			}
		}
		return true
	}
	cover := key
	for !all(cover) {
		cover = cover[:len(cover)-1]
	}
	// Exact, by brute force: [key, hi) = [cover, succ(cover)) iff no key lies
	// in one and not the other; when they differ, one of key and cover
	// (the lower bounds), hi (end, or key+"\x00" for a single key) or
	// succ(cover) (the upper bounds) does, and each is in the universe.
	same := true
	for _, k := range u {
		same = same && bytes.HasPrefix(k, cover) == inEtcdRange(key, end, k)
	}
	if !bytes.Equal(cover, iv.cover()) || same != iv.exact() {
		t.Fatalf("model broken: [%q, %q): brute force finds prefix %q exact %v, the model %q exact %v",
			key, end, cover, same, iv.cover(), iv.exact())
	}
	if !all(p) {
		t.Fatalf("[%q, %q): Prefix() = %q, which some key of the range does not start with (longest common prefix %q)",
			key, end, p, cover)
	}
	if !bytes.Equal(p, cover) {
		t.Fatalf("[%q, %q): Prefix() = %q, not the longest prefix every key starts with, %q", key, end, p, cover)
	}
	if exact != same {
		t.Fatalf("[%q, %q): Prefix() = (%q, exact %v), want exact %v", key, end, p, exact, same)
	}
}

func checkOverlapsModel(t *testing.T, key, end, prefix []byte) {
	t.Helper()
	k0, e0, q0 := bytes.Clone(key), bytes.Clone(end), bytes.Clone(prefix)
	r := gate.KeyRange{Key: key, End: end}
	got := r.Overlaps(prefix)
	unchanged(t, "Overlaps", r, k0, e0)
	if !bytes.Equal(prefix, q0) {
		t.Fatalf("Overlaps modified its prefix to %q, was %q", prefix, q0)
	}
	if want := model(key, end).overlaps(prefix); got != want {
		t.Fatalf("[%q, %q).Overlaps(%q) = %v, want %v", key, end, prefix, got, want)
	}
	checkPrefixEnd(t, prefix)
}

func checkOverlapsBrute(t *testing.T, key, end, prefix []byte) {
	t.Helper()
	r := gate.KeyRange{Key: key, End: end}
	// Exact: if some key starting with prefix lies in the range, the least
	// such, max(prefix, key), does, and both are in the universe.
	l := max(len(key), len(end), len(prefix)) + 1
	found := false
	for _, k := range universe(l) {
		if bytes.HasPrefix(k, prefix) && inEtcdRange(key, end, k) {
			found = true
			break
		}
	}
	if m := model(key, end).overlaps(prefix); m != found {
		t.Fatalf("model broken: [%q, %q) overlaps %q: %v by brute force, %v by the model", key, end, prefix, found, m)
	}
	if got := r.Overlaps(prefix); got != found {
		t.Fatalf("[%q, %q).Overlaps(%q) = %v, want %v", key, end, prefix, got, found)
	}
}

// Regressions these targets found in gate/op.go, fixed there: Prefix gave
// a shorter prefix than the longest ([Key, "\x00") with Key starting with
// 0xff bytes; End = PrefixEnd of a proper prefix of Key), missed the exact
// prefix of an all-0xff Key with End "\x00" (what clients send for a 0xff
// prefix), and Overlaps held for empty ranges.
func TestKeyRangeFoundBugs(t *testing.T) {
	for _, c := range []struct{ key, end, want string }{{"\xff\x00", "\x00", "\xff"}, {"ab", "b", "a"}} {
		if p, _ := (gate.KeyRange{Key: []byte(c.key), End: []byte(c.end)}).Prefix(); string(p) != c.want {
			t.Errorf("[%q, %q).Prefix() = %q, want %q", c.key, c.end, p, c.want)
		}
	}
	if _, exact := (gate.KeyRange{Key: []byte("\xff"), End: []byte{0}}).Prefix(); !exact {
		t.Errorf(`["\xff", "\x00").Prefix() is not exact`)
	}
	if (gate.KeyRange{Key: []byte("b"), End: []byte("a")}).Overlaps(nil) {
		t.Errorf(`empty ["b", "a") overlaps ""`)
	}
}
