package plugins

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestSpans: under a recording span, each plugin call is a child span
// with the plugin's name, its verdict and the reason.
func TestSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracer := tp.Tracer("test")
	h := newHost(t, []Spec{
		{Name: "tenant", Path: guest(t, "prefix", `PREFIX="/t"`, "CAPS=1")},
		{Name: "guard", Path: guest(t, "deny", `DENY_PREFIX="/t/secret"`)},
	}, Options{Tracer: tracer})

	// Without a recording span: no spans.
	if err := h.Request(context.Background(), caller, put("/x", "v")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}

	ctx, parent := tracer.Start(context.Background(), "request")
	denied(t, h.Request(ctx, caller, put("/secret", "v")), "plugin guard: keys under /t/secret are not allowed")
	parent.End()

	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 2 plugin calls and the parent", len(spans))
	}
	want := []map[attribute.Key]string{
		{"storegate.plugin": "tenant", "storegate.plugin.verdict": "mutate"},
		{"storegate.plugin": "guard", "storegate.plugin.verdict": "deny", "storegate.reason": "keys under /t/secret are not allowed"},
	}
	for i, w := range want {
		s := spans[i]
		if s.Name() != "storegate.plugin" || s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d: %s, parent %s", i, s.Name(), s.Parent().SpanID())
		}
		got := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			got[kv.Key] = kv.Value.AsString()
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("span %d: %s = %q, want %q", i, k, got[k], v)
			}
		}
	}
}
