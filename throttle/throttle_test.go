package throttle

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
)

func ident(t *testing.T, s string) gate.Identity {
	t.Helper()
	return gate.Identity{ID: spiffeid.RequireFromString(s)}
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestBucket(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	d := New(1<<20, 2<<20)
	d.now = c.now
	nobody, web := ident(t, "spiffe://example.org/nobody"), ident(t, "spiffe://example.org/web")

	// The burst is free.
	d.Charge(nobody, 1<<20)
	if w := d.Owes(nobody); w != 0 {
		t.Fatalf("owes %v within the burst", w)
	}
	// Beyond it the caller owes what it overspent, at the rate.
	d.Charge(nobody, 2<<20-2*RefusalCost)
	if w := d.Owes(nobody); w < 990*time.Millisecond || w > time.Second {
		t.Fatalf("owes %v, want about 1s (1 MiB over at 1 MiB/s)", w)
	}
	// Others owe nothing.
	if w := d.Owes(web); w != 0 {
		t.Fatalf("web owes %v", w)
	}
	// Time pays the debt.
	c.advance(500 * time.Millisecond)
	if w := d.Owes(nobody); w < 490*time.Millisecond || w > 500*time.Millisecond {
		t.Fatalf("owes %v after 0.5s, want about 0.5s", w)
	}
	c.advance(time.Second)
	if w := d.Owes(nobody); w != 0 {
		t.Fatalf("owes %v after paying", w)
	}
	// Every refusal costs RefusalCost, however small.
	d2 := New(1<<20, RefusalCost*10)
	d2.now = c.now
	for range 11 {
		d2.Charge(web, 0)
	}
	if w := d2.Owes(web); w <= 0 {
		t.Fatalf("11 empty refusals over a 10-refusal burst owe %v", w)
	}
	// The zero identity is never charged.
	d2.Charge(gate.Identity{}, 1<<30)
	if len(d2.m) != 1 {
		t.Fatalf("accounts: %d", len(d2.m))
	}
}

func TestSweep(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	d := New(1<<20, 1<<20)
	d.now = c.now
	for i := range maxEntries {
		d.Charge(ident(t, "spiffe://example.org/w/"+itoa(i)), 0)
	}
	c.advance(time.Second) // every account is paid up
	d.Charge(ident(t, "spiffe://example.org/new"), 0)
	if len(d.m) != 1 {
		t.Fatalf("accounts after a sweep: %d, want 1", len(d.m))
	}
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

// TestConnWaits: a connection of a caller in debt is not read until the
// debt is paid; one of a caller who owes nothing reads at once; closing the
// connection ends a waiting Read.
func TestConnWaits(t *testing.T) {
	d := New(1<<20, 1) // 1 MiB/s, no burst to speak of
	nobody, web := ident(t, "spiffe://example.org/nobody"), ident(t, "spiffe://example.org/web")
	d.Charge(nobody, 200<<10-RefusalCost) // ~0.2 s of debt

	read := func(id gate.Identity) (time.Duration, error) {
		a, b := net.Pipe()
		defer a.Close()
		c := d.Conn(b, id)
		defer c.Close()
		go a.Write([]byte("x"))
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		return time.Since(start), err
	}
	if took, err := read(nobody); err != nil || took < 150*time.Millisecond {
		t.Errorf("indebted caller's read: %v after %v, want a wait of about 0.2s", err, took)
	}
	if w := d.Owes(nobody); w != 0 {
		t.Errorf("still owes %v after the wait", w)
	}
	if took, err := read(web); err != nil || took > 2*time.Second {
		t.Errorf("paid-up caller's read: %v after %v", err, took)
	}

	d.Charge(nobody, 10<<20) // 10 s of debt
	a, b := net.Pipe()
	defer a.Close()
	c := d.Conn(b, nobody)
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	c.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("read on a closed, indebted conn succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("closing the conn did not end the waiting read")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Wait(ctx, nobody); err == nil {
		t.Error("Wait with a canceled context returned nil while in debt")
	}
}
