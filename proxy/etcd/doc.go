// Package etcd is storegate's etcd v3 gRPC front. It serves every etcd
// service (KV, Watch, Lease, Cluster, Maintenance, Auth, Lock, Election),
// one file per service; decodes each request into gate.Ops; asks the gate
// before anything is forwarded; forwards to the real cluster with the
// gateway's own credentials; and filters what goes back. Unknown services
// and methods are Unimplemented, never passed through.
package etcd
