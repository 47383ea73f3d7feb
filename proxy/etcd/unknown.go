package etcd

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// errUnknownFields refuses a request carrying fields this gateway's etcd
// API does not know (e.g. from a newer client): they would reach etcd
// without ever being examined by policy.
var errUnknownFields = status.Error(codes.InvalidArgument,
	"storegate: request has fields unknown to the gateway's etcd API v3.7; they cannot be authorized")

// hasUnknownFields reports whether m, or any message inside it, carries
// unknown fields. It visits only the fields that are set.
func hasUnknownFields(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = hasUnknownFields(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				found = hasUnknownFields(mv.Message())
				return !found
			})
		case fd.Message() != nil && !fd.IsMap():
			found = hasUnknownFields(v.Message())
		}
		return !found
	})
	return found
}

func checkKnown(req any) error {
	if m, ok := req.(proto.Message); ok && hasUnknownFields(m.ProtoReflect()) {
		return errUnknownFields
	}
	return nil
}

// knownFieldsStream refuses stream messages with unknown fields.
type knownFieldsStream struct {
	grpc.ServerStream
}

func (s knownFieldsStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkKnown(m)
}
