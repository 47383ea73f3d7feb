// Package throttle makes a caller pay for what the gateway refuses it.
//
// A refused request is work the gateway does for nothing: it reads, decrypts
// and decodes every byte and asks the policy before it can say no, and a
// caller with no rights at all can ask as fast as its link allows. Each
// refusal is charged to the caller's identity, in bytes (the request's size
// plus a fixed cost per refusal), against a token bucket: a burst is free,
// beyond it the caller owes, and while it owes, the gateway stops reading
// from its connections (the TCP window closes, its client stops sending)
// and answers nothing more until the debt is paid at the bucket's rate.
//
// Allowed requests are never charged: a caller that does what its policy
// permits is never slowed, whatever it sends. A caller that is refused now
// and then never notices (the burst absorbs it); one that sends refused
// requests without end gets at most the bucket's rate of the gateway's
// work, not a core.
package throttle

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/storegate/storegate/gate"
)

// Defaults for New's zero arguments.
const (
	// DefaultRate is what refusals may cost a caller per second once its
	// burst is spent: about eleven refused 1.5 MB requests a second, or
	// four thousand small ones.
	DefaultRate = 16 << 20
	// DefaultBurst is what a caller may be refused before it waits.
	DefaultBurst = 16 << 20
	// RefusalCost is charged for every refusal on top of its size: the
	// decision, the answer and the request's framing are not free either.
	RefusalCost = 4 << 10
	// maxEntries bounds the table of callers who owe before paid-up
	// entries are swept out.
	maxEntries = 1 << 16
)

// Debts is the gateway's ledger of what refusals cost each caller. It is
// safe for concurrent use.
type Debts struct {
	rate, burst float64 // bytes per second, bytes
	now         func() time.Time

	mu sync.Mutex
	m  map[gate.Identity]*account
}

// account is one caller's bucket: tokens as of at.
type account struct {
	tokens float64
	at     time.Time
}

// New returns a ledger that lets a caller be refused burst bytes, then
// rate bytes a second. Zero arguments take the defaults.
func New(rate, burst int64) *Debts {
	if rate <= 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	return &Debts{rate: float64(rate), burst: float64(burst), now: time.Now, m: map[gate.Identity]*account{}}
}

// balance is a's tokens at now (never above the burst).
func (d *Debts) balance(a *account, now time.Time) float64 {
	return min(d.burst, a.tokens+d.rate*now.Sub(a.at).Seconds())
}

// Charge records a refusal of a request of size bytes to id.
func (d *Debts) Charge(id gate.Identity, size int) {
	if id.IsZero() {
		return
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.m[id]
	if a == nil {
		if len(d.m) >= maxEntries {
			d.sweepLocked(now)
		}
		a = &account{tokens: d.burst, at: now}
		d.m[id] = a
	}
	a.tokens = d.balance(a, now) - float64(size+RefusalCost)
	a.at = now
}

// sweepLocked drops the accounts that owe nothing any more.
func (d *Debts) sweepLocked(now time.Time) {
	for id, a := range d.m {
		if d.balance(a, now) >= d.burst {
			delete(d.m, id)
		}
	}
}

// Owes is how long id must wait before the gateway serves it again.
func (d *Debts) Owes(id gate.Identity) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.m[id]
	if a == nil {
		return 0
	}
	b := d.balance(a, d.now())
	if b >= 0 {
		return 0
	}
	return time.Duration(-b / d.rate * float64(time.Second))
}

// Wait returns once id owes nothing, or with ctx's error.
func (d *Debts) Wait(ctx context.Context, id gate.Identity) error {
	return d.wait(ctx.Done(), id, ctx.Err)
}

func (d *Debts) wait(done <-chan struct{}, id gate.Identity, err func() error) error {
	for {
		w := d.Owes(id)
		if w <= 0 {
			return nil
		}
		t := time.NewTimer(w)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return err()
		}
	}
}

// Conn returns c, whose every Read first waits until id owes nothing: a
// caller in debt is not read from, so it cannot make the gateway decrypt,
// decode or judge anything more until it has paid.
func (d *Debts) Conn(c net.Conn, id gate.Identity) net.Conn {
	return &conn{Conn: c, d: d, id: id, closed: make(chan struct{})}
}

type conn struct {
	net.Conn
	d      *Debts
	id     gate.Identity
	once   sync.Once
	closed chan struct{}
}

func (c *conn) Read(b []byte) (int, error) {
	if err := c.d.wait(c.closed, c.id, func() error { return net.ErrClosed }); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
