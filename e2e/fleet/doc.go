// Package fleet holds end-to-end tests of gateway replicas behind a real
// HAProxy (TCP mode) in front of a 3-member etcd and a Consul agent: the
// fleet is discoverable (MemberList, etcdctl --cluster and client/v3's Sync
// list the live replicas and never etcd, and a dead replica drops out
// within its registration's TTL), and whatever a caller owns — leases,
// locks, elections, Consul sessions — is owned the same way whichever
// replica it reaches.
package fleet
