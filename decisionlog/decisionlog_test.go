package decisionlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

var (
	web     = gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")}
	idRE    = regexp.MustCompile(`^[0-9a-f]{32}$`)
	when    = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.FixedZone("CET", 3600))
	whenUTC = "2026-03-14T14:09:26.535897000Z"
)

func traced(ctx context.Context) context.Context {
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	}))
}

// observe logs rec and returns the one line written.
func observe(t *testing.T, ctx context.Context, rec *gate.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	l := newLog("test", &buf, nil, Config{OnError: func(err error) { t.Errorf("OnError: %v", err) }})
	if err := l.Audit(ctx, rec); err != nil {
		t.Fatalf("Audit: %v", err)
	}
	if err := l.Close(); err != nil { // drains: buf is not written to after
		t.Fatal(err)
	}
	out := buf.Bytes()
	if len(out) == 0 || out[len(out)-1] != '\n' || bytes.Count(out, []byte("\n")) != 1 {
		t.Fatalf("want exactly one line, got %q", out)
	}
	return out
}

// decode parses one line, keeping numbers exact.
func decode(t *testing.T, line []byte) map[string]any {
	t.Helper()
	if !json.Valid(line) {
		t.Fatalf("invalid JSON: %q", line)
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decoding %q: %v", line, err)
	}
	if d.More() {
		t.Fatalf("more than one value in %q", line)
	}
	return m
}

func TestFields(t *testing.T) {
	putOp := &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite,
		Method: "/etcdserverpb.KV/Put", Keys: gate.KeyRange{Key: []byte("/app/web/config")},
		ValueSize: 42, Lease: 7587869071352519001, PrevKV: true, TxnIndex: 3,
	}
	rangeOp := &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
		Method: "/etcdserverpb.KV/Range", Keys: gate.KeyRange{Key: []byte("/app/"), End: []byte("/app0")},
	}
	base := func(op *gate.Op) map[string]any {
		return map[string]any{
			"time": whenUTC, "caller": "spiffe://example.org/ns/prod/sa/web",
			"protocol": op.Protocol.String(), "method": op.Method,
			"resource": op.Resource.String(), "action": op.Action.String(),
			"duration_us": json.Number("1234"),
		}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	rec := func(op *gate.Op, d gate.Decision, err error) *gate.Record {
		return &gate.Record{Time: when, Caller: web, Op: op, Decision: d, Err: err, Duration: 1234567 * time.Nanosecond}
	}

	binOp := &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionDelete,
		Method: "/etcdserverpb.KV/DeleteRange", Keys: gate.KeyRange{Key: []byte{0xff, 0x00, 'a'}, End: []byte{0}},
	}
	escOp := &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
		Method: "/etcdserverpb.KV/Range", Keys: gate.KeyRange{Key: []byte("a\n\"b\\\t\x01é")},
	}
	svcOp := &gate.Op{
		Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
		Method: "PUT /v1/agent/service/register",
		Service: &gate.Service{
			Name: "web", ID: "web-1", Tags: []string{"tag-secret"},
			Meta: map[string]string{"db_password": "meta-secret"}, Address: "10.1.2.3", Port: 8080,
			Checks: []gate.Check{{Kind: gate.CheckHTTP, Target: gate.CheckTarget{URL: "http://u:check-secret@10.1.2.3:8080/"}}},
		},
		Session: "adf4238a-882b-9ddc-4a9d-5b6758e4159e", Datacenter: "dc1",
	}
	sessOp := &gate.Op{
		Protocol: gate.ProtocolConsul, Resource: gate.ResourceSession, Action: gate.ActionWrite,
		Method: "PUT /v1/session/create", Datacenter: "dc2",
	}

	tests := []struct {
		name string
		ctx  context.Context
		rec  *gate.Record
		want map[string]any
	}{
		{"allow", traced(context.Background()),
			rec(putOp, gate.Decision{Effect: gate.Allow, Revision: "rev-7"}, nil),
			with(base(putOp), "key", "/app/web/config", "value_size", json.Number("42"),
				"lease", json.Number("7587869071352519001"), "prev_kv", true, "txn_index", json.Number("3"),
				"result", "allow", "policy_revision", "rev-7",
				"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "span_id", "00f067aa0ba902b7")},
		{"deny", context.Background(),
			rec(putOp, gate.Decision{Effect: gate.Deny, Reason: "no intention allows write on /app/web/", Revision: "rev-7"}, nil),
			with(base(putOp), "key", "/app/web/config", "value_size", json.Number("42"),
				"lease", json.Number("7587869071352519001"), "prev_kv", true, "txn_index", json.Number("3"),
				"result", "deny", "reason", "no intention allows write on /app/web/", "policy_revision", "rev-7")},
		{"filter", context.Background(),
			rec(rangeOp, gate.Decision{Effect: gate.Filter, Revision: "rev-8"}, nil),
			with(base(rangeOp), "key", "/app/", "range_end", "/app0", "result", "filter", "policy_revision", "rev-8")},
		{"shadow", context.Background(),
			rec(rangeOp, gate.Decision{Effect: gate.Allow, Shadow: true, Reason: "range would be filtered: x", Revision: "rev-8"}, nil),
			with(base(rangeOp), "key", "/app/", "range_end", "/app0", "result", "allow",
				"shadow", true, "shadow_reason", "range would be filtered: x", "policy_revision", "rev-8")},
		{"evaluation error", context.Background(),
			rec(rangeOp, gate.Decision{Effect: gate.Allow, Reason: "ignored", Revision: "rev-9"}, errors.New("rego: eval_conflict_error: \"x\"\n")),
			with(base(rangeOp), "key", "/app/", "range_end", "/app0", "result", "deny",
				"reason", "policy evaluation failed", "error", "rego: eval_conflict_error: \"x\"\n", "policy_revision", "rev-9")},
		{"binary key", context.Background(),
			rec(binOp, gate.Decision{Effect: gate.Deny, Reason: "denied"}, nil),
			with(base(binOp), "key_base64", "/wBh", "range_end", "\x00", "result", "deny", "reason", "denied")},
		{"escaped key", context.Background(),
			rec(escOp, gate.Decision{Effect: gate.Allow}, nil),
			with(base(escOp), "key", "a\n\"b\\\t\x01é", "result", "allow")},
		{"service", context.Background(),
			rec(svcOp, gate.Decision{Effect: gate.Allow, Revision: "rev-1"}, nil),
			with(base(svcOp), "service", map[string]any{"name": "web", "id": "web-1"},
				"session", "adf4238a-882b-9ddc-4a9d-5b6758e4159e", "datacenter", "dc1",
				"result", "allow", "policy_revision", "rev-1")},
		{"session", context.Background(),
			rec(sessOp, gate.Decision{Effect: gate.Allow}, nil),
			with(base(sessOp), "datacenter", "dc2", "result", "allow")},
		{"invalid utf-8 in strings", context.Background(),
			rec(sessOp, gate.Decision{Effect: gate.Deny, Reason: "bad \xff byte", Revision: "r\xc3"}, nil),
			with(base(sessOp), "datacenter", "dc2", "result", "deny", "reason", "bad \ufffd byte", "policy_revision", "r\ufffd")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := observe(t, tt.ctx, tt.rec)
			got := decode(t, line)
			id, _ := got["decision_id"].(string)
			if !idRE.MatchString(id) {
				t.Errorf("decision_id = %q, want 32 lowercase hex characters", got["decision_id"])
			}
			delete(got, "decision_id")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("line %s\n got %v\nwant %v", line, got, tt.want)
			}
			if bytes.Contains(line, []byte("secret")) || bytes.Contains(line, []byte("10.1.2.3")) {
				t.Errorf("registration content logged: %s", line)
			}
		})
	}
}

// TestNoValues: nothing but the value's size reaches the log, and of a
// service only its name and ID.
func TestNoValues(t *testing.T) {
	const value = "hunter2-correct-horse-battery-staple"
	put := &gate.Op{
		Protocol: gate.ProtocolConsul, Resource: gate.ResourceKV, Action: gate.ActionWrite,
		Method: "PUT /v1/kv/", Keys: gate.KeyRange{Key: []byte("app/db/password")}, ValueSize: len(value),
		Service: &gate.Service{Name: "db", Tags: []string{value}, Meta: map[string]string{value: value}, Address: value},
	}
	for _, d := range []gate.Decision{{Effect: gate.Allow}, {Effect: gate.Deny, Reason: "no"}, {Effect: gate.Allow, Shadow: true, Reason: "no"}} {
		line := observe(t, traced(context.Background()), &gate.Record{Time: when, Caller: web, Op: put, Decision: d})
		decode(t, line)
		for _, frag := range []string{value, "hunter2", "horse"} {
			if bytes.Contains(line, []byte(frag)) {
				t.Errorf("%q logged: %s", frag, line)
			}
		}
	}
}

// TestUniqueIDs: every line has its own decision_id.
func TestUniqueIDs(t *testing.T) {
	var buf bytes.Buffer
	l := newLog("test", &buf, nil, Config{QueueSize: 2000})
	rec := &gate.Record{Time: when, Caller: web, Op: &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceStatus, Action: gate.ActionRead}}
	const n = 2000
	for range n {
		if err := l.Audit(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		var m struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(line, &m); err != nil || !idRE.MatchString(m.ID) || seen[m.ID] {
			t.Fatalf("bad or repeated decision_id in %s (%v)", line, err)
		}
		seen[m.ID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d lines, want %d", len(seen), n)
	}
}

// lineWriter checks that every Write is whole lines, at most maxWrite
// bytes.
type lineWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	bad    []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if len(p) == 0 || p[len(p)-1] != '\n' || len(p) > maxWrite {
		w.bad = append(w.bad, string(p))
	}
	return w.buf.Write(p)
}

func TestConcurrentLinesNeverInterleave(t *testing.T) {
	const goroutines, per = 8, 500
	w := &lineWriter{}
	l := newLog("test", w, nil, Config{QueueSize: goroutines * per, QueueBytes: 64 << 20,
		OnError: func(err error) { t.Errorf("OnError: %v", err) }})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			op := &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead, Method: "/etcdserverpb.KV/Range"}
			for i := range per {
				op.Keys.Key = fmt.Appendf(op.Keys.Key[:0], "/g%d/%d/%s", g, i, strings.Repeat("k", i%300))
				if err := l.Audit(context.Background(), &gate.Record{Time: time.Now(), Caller: web, Op: op,
					Decision: gate.Decision{Effect: gate.Deny, Reason: "r\n\"" + strings.Repeat("x", i%50)}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(w.bad) > 0 {
		t.Fatalf("%d writes were not whole lines, e.g. %q", len(w.bad), w.bad[0])
	}
	keys := map[string]bool{}
	sc := bufio.NewScanner(&w.buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := decode(t, sc.Bytes())
		keys[m["key"].(string)] = true
	}
	if len(keys) != goroutines*per {
		t.Fatalf("%d distinct keys, want %d", len(keys), goroutines*per)
	}
}

func TestFileRotates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit", "gw")
	path := filepath.Join(dir, "decisions.log")
	var (
		mu   sync.Mutex
		errs []error
	)
	l, err := Open(Config{Output: path, MaxSizeMB: 1, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Open creates the file and its directory, private to the gateway.
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700 | os.ModeDir} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Fatalf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}

	op := &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite, Method: "/etcdserverpb.KV/Put", ValueSize: 10}
	rec := &gate.Record{Time: when, Caller: web, Op: op, Decision: gate.Decision{Effect: gate.Allow, Revision: "r1"}}
	const lines = 3000 // about 1.5 MiB
	written := 0
	for i := range lines {
		op.Keys.Key = fmt.Appendf(op.Keys.Key[:0], "/app/%06d/%s", i, strings.Repeat("k", 200))
		if err := l.Audit(context.Background(), rec); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		written += len(appendRecord(nil, context.Background(), rec))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if written <= 1<<20 {
		t.Fatalf("test wrote only %d bytes", written)
	}
	if len(errs) > 0 {
		t.Fatalf("write errors: %v", errs)
	}

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Fatalf("want the log and one backup in %s, got %v", dir, ents)
	}
	total := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "decisions") || !strings.HasSuffix(e.Name(), ".log") {
			t.Errorf("unexpected file %s", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Errorf("%s is %d bytes, more than MaxSizeMB", e.Name(), len(b))
		}
		if len(b) == 0 || b[len(b)-1] != '\n' {
			t.Fatalf("%s does not end with a whole line", e.Name())
		}
		for _, line := range bytes.Split(b[:len(b)-1], []byte("\n")) {
			decode(t, line)
			total++
		}
	}
	if total != lines {
		t.Fatalf("%d lines in the files, want %d", total, lines)
	}
}

func TestFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	const old = `{"old":true}` + "\n"
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Config{Output: path})
	if err != nil {
		t.Fatal(err)
	}
	l.Observe(context.Background(), &gate.Record{Time: when, Caller: web, Op: &gate.Op{}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(old)) || bytes.Count(b, []byte("\n")) != 2 {
		t.Fatalf("file is %q, want the old line then one new one", b)
	}
	decode(t, b[len(old):])
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{},
		{Output: filepath.Join(file, "decisions.log")}, // parent is a file
		{Output: t.TempDir()},                          // a directory
		{Output: filepath.Join(t.TempDir(), "x.log"), MaxSizeMB: -1},
	} {
		if l, err := Open(cfg); err == nil {
			l.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	for _, out := range []string{"stdout", "stderr"} {
		l, err := Open(Config{Output: out, MaxSizeMB: 1})
		if err != nil {
			t.Fatal(err)
		}
		if l.closer != nil {
			t.Errorf("Close of %s would close it", out)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// stringCases are strings the encoder must get right.
var stringCases = []string{
	"", "plain", `"quoted"`, `back\slash`, "\\\"", "line\nbreak", "\r\t\b\f", "\x00\x01\x1f\x7f",
	"\u2028\u2029", "é中文🙂", "\xff", "a\xffb", "\xc3", "\xc3(", "\xed\xa0\x80", "\xf4\x90\x80\x80",
	"</script>&<>", "\x1b[31mred\x1b[0m", "{\"decision_id\":\"forged\"}\n{",
}

func init() {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	stringCases = append(stringCases, string(all), string(all[:128]))
}

// checkString encodes s and checks the result is valid JSON that decodes
// to s, with invalid UTF-8 replaced as encoding/json replaces it.
func checkString(t *testing.T, s string) {
	t.Helper()
	enc := appendString(nil, s)
	if !json.Valid(enc) || bytes.ContainsAny(enc, "\n\r") {
		t.Fatalf("appendString(%q) = %q: not valid single-line JSON", s, enc)
	}
	var got string
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatalf("appendString(%q) = %q: %v", s, enc, err)
	}
	want := s
	if !utf8.ValidString(s) {
		std, _ := json.Marshal(s)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
	}
	if got != want {
		t.Fatalf("appendString(%q) = %q decodes to %q, want %q", s, enc, got, want)
	}
	if utf8.ValidString(s) {
		// Keys go through the []byte form.
		if b := appendEscaped(nil, []byte(s)); !bytes.Equal(b, enc[1:len(enc)-1]) {
			t.Fatalf("appendEscaped([]byte(%q)) = %q, want %q", s, b, enc[1:len(enc)-1])
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range stringCases {
		checkString(t, s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range stringCases {
		f.Add(s)
	}
	f.Fuzz(checkString)
}

func benchRecord() (context.Context, *gate.Record) {
	op := &gate.Op{
		Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite,
		Method: "/etcdserverpb.KV/Put", Keys: gate.KeyRange{Key: []byte("/app/billing/invoices/2026/03/14/inv-000123")},
		ValueSize: 512, Lease: 7587869071352519001,
	}
	return traced(context.Background()), &gate.Record{
		Time: time.Now(), Caller: web, Op: op, Duration: 3 * time.Microsecond,
		Decision: gate.Decision{Effect: gate.Deny, Reason: "no intention allows web to write /app/billing/", Revision: "sha256:4f1c2d"},
	}
}

func BenchmarkObserve(b *testing.B) {
	ctx, rec := benchRecord()
	l := newLog("discard", io.Discard, nil, Config{ErrorMode: ErrorDrop, OnError: func(error) {}})
	defer l.Close()
	b.ReportAllocs()
	for b.Loop() {
		l.Observe(ctx, rec)
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	ctx, rec := benchRecord()
	l := newLog("discard", io.Discard, nil, Config{ErrorMode: ErrorDrop, OnError: func(error) {}})
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Observe(ctx, rec)
		}
	})
}

func TestAppendTime(t *testing.T) {
	for _, tm := range []time.Time{
		when, {}, time.Unix(0, 0), time.Unix(1, 1), time.Unix(1<<33, 999999999).In(time.FixedZone("X", -7*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Now(),
	} {
		want := tm.UTC().Format(timeFormat)
		if got := string(appendTime(nil, tm)); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
		}
		if p, err := time.Parse(time.RFC3339Nano, want); err == nil && !p.Equal(tm) {
			t.Errorf("%s parses back as %v, want %v", want, p, tm)
		}
	}
}
