// Package e2e holds storegate's end-to-end tests: the real gateway binary
// between the real etcdctl 3.7.3 and a real etcd (server/v3/embed, in the
// test process), with SVIDs from the gateway's own dev CA.
package e2e
