// Package mtls owns the gateway's TLS configurations: the mutual-TLS server
// config every front listens with, the client configs it dials upstreams
// with, the sources those configs take their X.509-SVID and trust bundles
// from (the SPIFFE Workload API, or PEM files that are watched and reloaded),
// and the development CA behind `gateway certs` and `gateway dev`.
//
// A Source is read on every handshake, so a rotated SVID or bundle applies to
// new connections while established ones keep running. A client is accepted
// only if its certificate is an X.509-SVID that chains to the trust bundle of
// its own trust domain, and that trust domain is one the server was
// configured to accept; every refusal is logged once with its reason.
package mtls
