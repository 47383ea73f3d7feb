package etcd

import (
	"context"
	"fmt"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/gate"
)

// ReservedPrefix is the etcd key prefix the gateway keeps its own records
// under; no caller reads, writes or watches it (the gate enforces that).
const ReservedPrefix = "/_storegate/"

// leaseOwnerPrefix holds one key per lease granted through a gateway:
// leaseOwnerPrefix + the lease ID in 16 hex digits, whose value is the
// granting identity's SPIFFE ID. The key is attached to the lease itself,
// so it lives exactly as long as the lease, every replica reads the same
// owner, and a restart loses nothing.
const leaseOwnerPrefix = ReservedPrefix + "leases/"

func leaseOwnerKey(id int64) []byte {
	return fmt.Appendf(nil, "%s%016x", leaseOwnerPrefix, uint64(id))
}

// leaseIDFromOwnerKey parses an owner record's key.
func leaseIDFromOwnerKey(k []byte) (int64, bool) {
	if len(k) != len(leaseOwnerPrefix)+16 || string(k[:len(leaseOwnerPrefix)]) != leaseOwnerPrefix {
		return 0, false
	}
	u, err := strconv.ParseUint(string(k[len(leaseOwnerPrefix):]), 16, 64)
	return int64(u), err == nil
}

// leaseOwner returns the identity that granted lease id through a gateway,
// or "" when none is on record (the lease is gone, or was granted
// directly in etcd).
func (s *Server) leaseOwner(ctx context.Context, id int64) (string, error) {
	resp, err := s.up.kv.Range(upstreamCtx(ctx), &pb.RangeRequest{Key: leaseOwnerKey(id)})
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != id {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// recordLease writes the owner record of a lease just granted to owner.
func (s *Server) recordLease(ctx context.Context, id int64, owner string) error {
	key := leaseOwnerKey(id)
	resp, err := s.up.kv.Txn(upstreamCtx(ctx), &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: key, Value: []byte(owner), Lease: id}}}},
	})
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return status.Error(codes.Internal, "storegate: the lease already has an owner on record")
	}
	return nil
}

// useLease makes using lease id (keeping it alive, revoking it, reading
// it, attaching keys to it) part of q: once q's asked ops are allowed, the
// lease's owner is looked up, and a lease that is not the caller's own adds
// a foreign op that only an intention naming owners allows. Lease 0, where
// etcd's lock and election services grant a lease of their own that nobody
// owns, is a foreign op at once. With attach, the keys already on the lease
// must be writable too (etcd's own rule for attaching).
func (s *Server) useLease(q *gate.Request, act gate.Action, method string, id int64, txnIndex int, attach bool) {
	foreign := func(owner string) {
		op := leaseOp(act, method, id)
		op.Foreign, op.Owner, op.TxnIndex = true, owner, txnIndex
		q.Derive(op)
	}
	if id == 0 {
		foreign("")
		return
	}
	q.DeriveAfter(func(ctx context.Context, q *gate.Request) error {
		owner, err := s.leaseOwner(ctx, id)
		if err != nil {
			return err
		}
		// A lease with no owner on record — granted directly in etcd, or
		// gone — is foreign too: answering "not found" for a missing lease
		// and "denied" for another's would tell which leases exist.
		if owner != q.Caller().String() {
			foreign(owner)
		}
		if attach {
			q.DeriveAfter(func(ctx context.Context, q *gate.Request) error {
				return s.deriveLeaseKeys(ctx, q, id, gate.ActionWrite, method, txnIndex)
			})
		}
		return nil
	})
}

// deriveLeaseKeys adds an act op (write, delete) on every key attached to
// lease id but the gateway's own record.
func (s *Server) deriveLeaseKeys(ctx context.Context, q *gate.Request, id int64, act gate.Action, method string, txnIndex int) error {
	keys, err := s.leaseKeys(ctx, id)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if s.gate.Reserved(k) {
			continue
		}
		op := etcdOp(gate.ResourceKV, act, method)
		op.Keys = gate.KeyRange{Key: k}
		op.Lease = id
		op.TxnIndex = txnIndex
		q.Derive(op)
	}
	return nil
}

// leaseKeys lists the keys attached to a lease, from the upstream.
func (s *Server) leaseKeys(ctx context.Context, id int64) ([][]byte, error) {
	resp, err := s.up.lease.LeaseTimeToLive(upstreamCtx(ctx), &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
	if err != nil {
		return nil, err
	}
	return resp.Keys, nil
}
