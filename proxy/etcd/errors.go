package etcd

import (
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors the front returns itself; etcd's own texts where clients know them.
var (
	errTooManyOps     = rpctypes.ErrGRPCTooManyOps
	errEmptyKey       = rpctypes.ErrGRPCEmptyKey
	errEmptyRequestOp = status.Error(codes.InvalidArgument, "storegate: txn request op is empty")
)

// Messages of errors the front passes on as they are: etcd's own (which
// clients match on), the gateway's, and gRPC's, none of which names where
// the cluster is.
var passedPrefixes = []string{"etcdserver: ", "mvcc: ", "auth: ", "lease: ", "storegate: ", "grpc: "}

// scrubbed is err as a caller may see it. An error of the gateway's own
// hop to etcd (a dial or a connection that failed: "connection error:
// desc = \"transport: Error while dialing: dial tcp 10.0.0.5:2379: ...\"")
// would tell the caller where the cluster is and how the gateway reaches
// it, which is what the gateway keeps from callers (MemberList shows no
// etcd URLs either); it keeps its code, which is what clients act on
// (Unavailable is retried), and says no more. Context errors (Canceled,
// DeadlineExceeded) and the codes etcd and the gate answer with pass.
func scrubbed(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err // the front's own errors; the upstream's are statuses
	}
	switch st.Code() {
	case codes.Unavailable, codes.Unknown, codes.Internal:
	default:
		return err
	}
	msg := st.Message()
	for _, p := range passedPrefixes {
		if strings.HasPrefix(msg, p) {
			return err
		}
	}
	if st.Code() == codes.Unavailable {
		return status.Error(codes.Unavailable, "storegate: etcd is unavailable")
	}
	return status.Error(st.Code(), "storegate: the call to etcd failed")
}
