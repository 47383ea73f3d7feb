package consul

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// agentServer is a real HTTP/1.1 server on loopback that counts the
// connections made to it.
type agentServer struct {
	*httptest.Server
	conns atomic.Int32
}

func newAgentServer(t *testing.T, h http.HandlerFunc) *agentServer {
	t.Helper()
	s := &agentServer{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *agentServer) transport(t *testing.T) *agentTransport {
	t.Helper()
	tr := newAgentTransport("tcp", strings.TrimPrefix(s.URL, "http://"))
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// call sends one request through tr and returns the answer's body, read
// (all of it, or n bytes when n >= 0) and closed.
func call(t *testing.T, tr http.RoundTripper, method, url string, body []byte, n int) (int, string) {
	t.Helper()
	var rb io.Reader
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rb)
	if err != nil {
		t.Fatal(err)
	}
	req.GetBody = nil // as a forwarded caller's body: not replayable
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	var r io.Reader = resp.Body
	if n >= 0 {
		r = io.LimitReader(resp.Body, int64(n))
	}
	b, err := io.ReadAll(r)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestAgentTransport(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte(r.Method + " " + r.URL.RequestURI() + " " + string(b)))
	}
	t.Run("answers read to the end reuse one connection", func(t *testing.T) {
		s := newAgentServer(t, echo)
		tr := s.transport(t)
		for i := range 10 {
			method, body := http.MethodGet, []byte(nil)
			if i%2 == 1 {
				method, body = http.MethodPut, []byte("v")
			}
			code, got := call(t, tr, method, s.URL+"/v1/kv/a?cas=1", body, -1)
			if want := method + " /v1/kv/a?cas=1 " + string(body); code != http.StatusOK || got != want {
				t.Fatalf("answer %d %q, want 200 %q", code, got, want)
			}
		}
		if n := s.conns.Load(); n != 1 {
			t.Errorf("%d connections for 10 sequential requests, want 1", n)
		}
	})
	t.Run("an answer closed before its end closes its connection", func(t *testing.T) {
		s := newAgentServer(t, echo)
		tr := s.transport(t)
		call(t, tr, http.MethodGet, s.URL+"/long/path", nil, 2)
		call(t, tr, http.MethodGet, s.URL+"/long/path", nil, -1)
		if n := s.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2 (the first answer was not read to its end)", n)
		}
	})
	t.Run("an idle connection the agent closed is not used", func(t *testing.T) {
		s := newAgentServer(t, echo)
		tr := s.transport(t)
		call(t, tr, http.MethodGet, s.URL+"/x", nil, -1)
		s.CloseClientConnections()
		// A PUT is never sent twice: it succeeds only if the closed
		// connection is seen before anything is written on it.
		if code, got := call(t, tr, http.MethodPut, s.URL+"/x", []byte("v"), -1); code != http.StatusOK || got != "PUT /x v" {
			t.Fatalf("PUT after the agent closed the idle connection: %d %q", code, got)
		}
		if n := s.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("the request's end ends a held answer", func(t *testing.T) {
		held, gone := make(chan struct{}), make(chan struct{})
		s := newAgentServer(t, func(w http.ResponseWriter, r *http.Request) {
			close(held)
			<-r.Context().Done() // a blocking query the agent holds
			close(gone)
		})
		tr := s.transport(t)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v1/kv/a?index=5", nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-held
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("RoundTrip: %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("RoundTrip did not return after its context ended")
		}
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Fatal("the agent's side of the connection was not closed")
		}
	})
	t.Run("a unix socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "agent.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		s := &agentServer{Server: httptest.NewUnstartedServer(http.HandlerFunc(echo))}
		s.Listener.Close()
		s.Listener = l
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		}
		s.Start()
		t.Cleanup(s.Close)
		tr := newAgentTransport("unix", sock)
		t.Cleanup(tr.CloseIdleConnections)
		// Addressed to the agent's HTTP address, sent to its socket.
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodGet} {
			code, got := call(t, tr, m, "http://127.0.0.1:8500/v1/kv/a", []byte("v"), -1)
			if want := m + " /v1/kv/a v"; code != http.StatusOK || got != want {
				t.Fatalf("answer %d %q, want 200 %q", code, got, want)
			}
		}
		if n := s.conns.Load(); n != 1 {
			t.Errorf("%d connections for 3 sequential requests, want 1", n)
		}
	})
	t.Run("an unreachable agent is an error", func(t *testing.T) {
		s := newAgentServer(t, echo)
		tr := s.transport(t)
		s.Close()
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/x", nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatal("RoundTrip to a closed listener succeeded")
		}
	})
}

// A unix socket carries plain HTTP only.
func TestUpstreamSocketNeedsHTTP(t *testing.T) {
	up, _ := url.Parse("https://127.0.0.1:8501")
	g := gate.New(nil, nil, gate.WithReserved([]byte("/_storegate/")))
	if _, err := New(g, nil, Options{Upstream: up, UpstreamSocket: "/run/consul/http.sock"}); err == nil {
		t.Fatal("New took an https upstream with a unix socket")
	}
}
