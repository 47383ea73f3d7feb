package testenv

import (
	"crypto/tls"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/mtls"
)

// This file holds the clients the suites make from the PKI's identities.

// ClientTLS is the TLS configuration of a client presenting who's SVID and
// trusting the PKI's CA (its key pair is read again when its files change).
func (p *PKI) ClientTLS(who string) (*tls.Config, error) {
	return mtls.FileClientConfig(mtls.ClientFiles{Cert: p.Cert(who), Key: p.Key(who), CA: p.Bundle()})
}

// EtcdClient is a client/v3 client of endpoints (a gateway's front, a
// balancer, etcd members) as the PKI's caller who.
func EtcdClient(p *PKI, who string, endpoints ...string) (*clientv3.Client, error) {
	tc, err := p.ClientTLS(who)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// EtcdClient is EtcdClient, failing the test on error and closing the
// client when the test ends.
func (e *Env) EtcdClient(p *PKI, who string, endpoints ...string) *clientv3.Client {
	e.t.Helper()
	c, err := EtcdClient(p, who, endpoints...)
	e.check(err)
	e.t.Cleanup(func() { c.Close() })
	return c
}

// MembersClient is Etcd.Client (the members given, all if none, as who),
// failing the test on error and closing the client when the test ends: a
// client around the gateways, to read what the store itself holds.
func (e *Env) MembersClient(ec *Etcd, who string, members ...int) *clientv3.Client {
	e.t.Helper()
	c, err := ec.Client(who, members...)
	e.check(err)
	e.t.Cleanup(func() { c.Close() })
	return c
}

// ConsulClient is a consul/api client of addr (a gateway's Consul front, a
// balancer) over HTTPS as the PKI's caller who, configured as applications
// configure one (api.DefaultConfig: a transport of its own), failing the
// test on error and closing its idle connections when the test ends.
func (e *Env) ConsulClient(p *PKI, who, addr string) *api.Client {
	e.t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = addr, "https"
	cfg.TLSConfig = api.TLSConfig{CAFile: p.Bundle(), CertFile: p.Cert(who), KeyFile: p.Key(who)}
	c, err := api.NewClient(cfg)
	e.check(err)
	e.t.Cleanup(cfg.Transport.CloseIdleConnections)
	return c
}
