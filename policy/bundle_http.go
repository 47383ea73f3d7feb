package policy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// bundleHTTP is the HTTP client OPA's REST client fetches bundles with (an
// OPA "auth plugin", its extension point for the transport): the
// configured TLS, bounded dial, handshake and header waits, and a bundle
// read whole, bounded, and checked before OPA's reader sees it.
type bundleHTTP struct {
	tls   *tls.Config
	limit int64
}

// Interface guard.
var _ rest.HTTPAuthPlugin = (*bundleHTTP)(nil)

// NewClient is called by OPA's client once (and again when it changes
// its response header timeout).
func (h *bundleHTTP) NewClient(c rest.Config) (*http.Client, error) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          2,
		ForceAttemptHTTP2:     true,
	}
	if h.tls != nil {
		tr.TLSClientConfig = h.tls.Clone()
	}
	if c.ResponseHeaderTimeoutSeconds != nil && *c.ResponseHeaderTimeoutSeconds > 0 {
		tr.ResponseHeaderTimeout = time.Duration(*c.ResponseHeaderTimeoutSeconds) * time.Second
	}
	return &http.Client{Transport: boundedBody{tr, h.limit}}, nil
}

// Prepare adds nothing to a request.
func (*bundleHTTP) Prepare(*http.Request) error { return nil }

// boundedBody reads a 200 response's body whole, at most limit bytes, and
// checks what it expands to, so that no bundle costs more than the limit
// however it is built.
type boundedBody struct {
	rt    http.RoundTripper
	limit int64
}

func (b boundedBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, b.limit+1))
	if err != nil {
		return nil, fmt.Errorf("policy: bundle download: %w", err)
	}
	if int64(len(raw)) > b.limit {
		return nil, fmt.Errorf("policy: bundle larger than the size limit of %d bytes", b.limit)
	}
	if err := checkTarball(bytes.NewReader(raw), b.limit); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	resp.ContentLength = int64(len(raw))
	return resp, nil
}
