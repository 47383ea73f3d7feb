package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// authServer serves etcdserverpb.Auth: etcd's own users and roles are the
// cluster's administration, so every call but AuthStatus is an admin op.
type authServer struct {
	pb.UnsafeAuthServer
	s *Server
}

var _ pb.AuthServer = (*authServer)(nil)

// forward authorizes one op without a target and forwards the request.
func forward[Req, Resp any](ctx context.Context, s *Server, res gate.Resource, act gate.Action, method string, r Req,
	call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	ops := [1]gate.Op{etcdOp(res, act, method)}
	if err := s.allow(ctx, ops[0]); err != nil {
		var zero Resp
		return zero, err
	}
	return call(upstreamCtx(ctx), r)
}

func (a *authServer) admin() pb.AuthClient { return a.s.up.auth }

func (a *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/AuthEnable", r, a.admin().AuthEnable)
}

func (a *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/AuthDisable", r, a.admin().AuthDisable)
}

func (a *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionRead, "/etcdserverpb.Auth/AuthStatus", r, a.admin().AuthStatus)
}

func (a *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/Authenticate", r, a.admin().Authenticate)
}

func (a *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserAdd", r, a.admin().UserAdd)
}

func (a *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserGet", r, a.admin().UserGet)
}

func (a *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserList", r, a.admin().UserList)
}

func (a *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserDelete", r, a.admin().UserDelete)
}

func (a *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserChangePassword", r, a.admin().UserChangePassword)
}

func (a *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserGrantRole", r, a.admin().UserGrantRole)
}

func (a *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/UserRevokeRole", r, a.admin().UserRevokeRole)
}

func (a *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleAdd", r, a.admin().RoleAdd)
}

func (a *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleGet", r, a.admin().RoleGet)
}

func (a *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleList", r, a.admin().RoleList)
}

func (a *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleDelete", r, a.admin().RoleDelete)
}

func (a *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleGrantPermission", r, a.admin().RoleGrantPermission)
}

func (a *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return forward(ctx, a.s, gate.ResourceAuth, gate.ActionAdmin, "/etcdserverpb.Auth/RoleRevokePermission", r, a.admin().RoleRevokePermission)
}
