package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/plugins"
	"github.com/storegate/storegate/policy"
)

// status is the admin listener's /status: what this replica enforces and
// runs on, so that an operator (or a test) can compare replicas. It shows
// paths, URLs without their query or user information, digests and
// identities; never a key, a token or a password.
type status struct {
	Policy    policy.Status    `json:"policy"`
	Plugins   []plugins.Loaded `json:"plugins"`
	Identity  identityStatus   `json:"identity"`
	Upstreams upstreamsStatus  `json:"upstreams"`
	Draining  bool             `json:"draining"`
}

type identityStatus struct {
	// SVID is the gateway's own SPIFFE ID ("" while it has none).
	SVID     string    `json:"svid,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Error    string    `json:"error,omitempty"`
	Source   string    `json:"source"` // files or workload_api
}

type upstreamsStatus struct {
	Etcd   *upstreamStatus `json:"etcd,omitempty"`
	Consul *upstreamStatus `json:"consul,omitempty"`
}

type upstreamStatus struct {
	Endpoints []string `json:"endpoints,omitempty"` // etcd
	Address   string   `json:"address,omitempty"`   // consul
	Answers   bool     `json:"answers"`
	Error     string   `json:"error,omitempty"`
}

// statusSource is what /status reads.
type statusSource struct {
	engine    interface{ Status() policy.Status }
	plugins   interface{ Loaded() []plugins.Loaded } // nil: no plugins
	svid      mtls.Source
	svidFrom  string
	ready     readiness
	etcd      []string
	consulURL string
}

func (s statusSource) get(ctx context.Context) status {
	st := status{Policy: s.engine.Status(), Plugins: []plugins.Loaded{}, Identity: identityStatus{Source: s.svidFrom}}
	if s.plugins != nil {
		st.Plugins = s.plugins.Loaded()
	}
	if svid, err := s.svid.GetX509SVID(); err != nil {
		st.Identity.Error = err.Error()
	} else {
		st.Identity.SVID, st.Identity.NotAfter = svid.ID.String(), svid.Certificates[0].NotAfter
	}
	st.Draining = s.ready.draining != nil && s.ready.draining.Load()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	answer := func(u interface{ Ready(context.Context) error }, out *upstreamStatus) {
		if err := u.Ready(ctx); err != nil {
			out.Error = err.Error()
		} else {
			out.Answers = true
		}
	}
	if s.ready.etcd != nil {
		st.Upstreams.Etcd = &upstreamStatus{}
		for _, ep := range s.etcd {
			st.Upstreams.Etcd.Endpoints = append(st.Upstreams.Etcd.Endpoints, policy.RedactURL(ep))
		}
		answer(s.ready.etcd, st.Upstreams.Etcd)
	}
	if s.ready.consul != nil {
		st.Upstreams.Consul = &upstreamStatus{Address: policy.RedactURL(s.consulURL)}
		answer(s.ready.consul, st.Upstreams.Consul)
	}
	return st
}

func (s statusSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.get(r.Context()))
}
