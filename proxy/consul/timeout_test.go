package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/storegate/storegate/internal/testenv"
)

// TestBoundedTransportEndsRequestsToAHungAgent proves that the transport
// to the agent ends a plain request to a stopped agent (SIGSTOP: its
// socket accepts, nothing answers) with ErrAgentTimeout after about the
// request timeout, a blocking query after its wait plus jitter plus the
// timeout, and not later; that the agent answers through it again after
// SIGCONT; and that no goroutine is left once its connections are closed.
func TestBoundedTransportEndsRequestsToAHungAgent(t *testing.T) {
	env := testenv.New(t)
	c := env.Consul(testenv.ConsulSpec{})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	const timeout = time.Second
	client := &http.Client{Transport: bounded(tr, timeout)}
	get := func(path string) (time.Duration, error) {
		start := time.Now()
		resp, err := client.Get("http://" + c.HTTPAddr + path)
		if err != nil {
			return time.Since(start), err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
			err = fmt.Errorf("%s", resp.Status)
		}
		return time.Since(start), err
	}
	env.Eventually(time.Minute, func(context.Context) error { _, err := get("/v1/kv/x"); return err })

	if err := c.Proc.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = c.Proc.Resume()
		}
	}()
	took, err := get("/v1/kv/x")
	if !errors.Is(err, ErrAgentTimeout) || took < timeout-100*time.Millisecond || took > timeout+3*time.Second {
		t.Errorf("GET /v1/kv/x from a stopped agent: %v after %v, want ErrAgentTimeout after about %v", err, took, timeout)
	}
	const wait = 2 * time.Second
	took, err = get(fmt.Sprintf("/v1/kv/x?index=1&wait=%s", wait))
	if limit := wait + wait/16 + timeout; !errors.Is(err, ErrAgentTimeout) || took < limit-100*time.Millisecond || took > limit+3*time.Second {
		t.Errorf("a blocking query (wait %v) to a stopped agent: %v after %v, want ErrAgentTimeout after about %v", wait, err, took, limit)
	}

	if err := c.Proc.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	env.Eventually(time.Minute, func(context.Context) error { _, err := get("/v1/kv/x"); return err })
	tr.CloseIdleConnections()
}
