package etcd

import (
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
