package etcd

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// frontServices are the services the etcd front registers (server.go).
var frontServices = []*grpc.ServiceDesc{
	&pb.KV_ServiceDesc, &pb.Watch_ServiceDesc, &pb.Lease_ServiceDesc, &pb.Cluster_ServiceDesc,
	&pb.Maintenance_ServiceDesc, &pb.Auth_ServiceDesc, &v3lockpb.Lock_ServiceDesc, &v3electionpb.Election_ServiceDesc,
}

// requestTypes is the input type of every method of frontServices, by
// their descriptors (so a method added to etcd's API is covered).
var requestTypes = sync.OnceValues(func() ([]protoreflect.MessageType, error) {
	var types []protoreflect.MessageType
	for _, sd := range frontServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(sd.ServiceName))
		if err != nil {
			return nil, err
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(methods.Get(i).Input().FullName())
			if err != nil {
				return nil, err
			}
			if !slices.Contains(types, mt) {
				types = append(types, mt)
			}
		}
	}
	// The wire oracle below does not model map fields (entries drop their
	// unknown fields; a repeated key replaces the entry), groups or closed
	// enums (whose unknown values become unknown fields): refuse to run if
	// a request can hold one.
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor) error
	walk = func(md protoreflect.MessageDescriptor) error {
		if seen[md.FullName()] {
			return nil
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			switch {
			case fd.IsMap():
				return fmt.Errorf("%s is a map: the wire oracle needs map support", fd.FullName())
			case fd.Kind() == protoreflect.GroupKind:
				return fmt.Errorf("%s is a group: the wire oracle needs group support", fd.FullName())
			case fd.Enum() != nil && fd.Enum().IsClosed():
				return fmt.Errorf("%s is a closed enum: the wire oracle needs closed enum support", fd.FullName())
			case fd.Message() != nil:
				if err := walk(fd.Message()); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, mt := range types {
		if err := walk(mt.Descriptor()); err != nil {
			return nil, err
		}
	}
	return types, nil
})

// wireType is the wire type a field of kind k has (a packed repeated
// scalar is also accepted as bytes).
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

var errOracle = errors.New("wire oracle cannot parse")

// wireUnknown is the oracle: whether decoding b as md leaves an unknown
// field anywhere in the message, worked out from the wire bytes and the
// descriptor alone. A field is unknown if md has no field of its number,
// or has one of a different wire type (the decoder keeps such a field as
// unknown too). A message field's bytes are judged recursively, and they
// count as follows: every occurrence of a singular or repeated message
// field is merged into (or appended to) the message, so its unknown
// fields stay; but a oneof keeps only its last member set, merged over
// all the occurrences since a different member was last set, so what a
// replaced member held is gone.
func wireUnknown(b []byte, md protoreflect.MessageDescriptor) (bool, error) {
	type member struct {
		num     protowire.Number
		unknown bool
	}
	var (
		unknown bool
		oneofs  = map[protoreflect.FullName]member{}
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, errOracle
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false, errOracle
		}
		val := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		packed := fd != nil && fd.IsList() && typ == protowire.BytesType && fd.Kind() != protoreflect.StringKind &&
			fd.Kind() != protoreflect.BytesKind && fd.Kind() != protoreflect.MessageKind
		if fd == nil || typ != wireType(fd.Kind()) && !packed {
			unknown = true
			continue
		}
		inner := false
		if fd.Message() != nil {
			v, n := protowire.ConsumeBytes(val)
			if n < 0 {
				return false, errOracle
			}
			u, err := wireUnknown(v, fd.Message())
			if err != nil {
				return false, err
			}
			inner = u
		}
		if od := fd.ContainingOneof(); od != nil {
			m := oneofs[od.FullName()]
			if m.num != num {
				m = member{num: num}
			}
			m.unknown = m.unknown || inner
			oneofs[od.FullName()] = m
			continue
		}
		unknown = unknown || inner
	}
	for _, m := range oneofs {
		unknown = unknown || m.unknown
	}
	return unknown, nil
}

// clearUnknown drops the unknown fields of m and of every message in it,
// walking the descriptor's fields (not Range, as hasUnknownFields does).
func clearUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() == nil || !m.Has(fd) {
			continue
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				m.Mutable(fd).Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
					clearUnknown(v.Message())
					return true
				})
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range l.Len() {
				clearUnknown(l.Get(j).Message())
			}
		default:
			clearUnknown(m.Mutable(fd).Message())
		}
	}
}

var deterministicMarshal = proto.MarshalOptions{Deterministic: true}

// checkUnknownFields: for every request type b decodes as, hasUnknownFields
// (and checkKnown) agree with the wire oracle, and with a second one:
// clearing the unknown fields everywhere, re-marshalling and decoding
// again gives a message different from the original iff it had some.
func checkUnknownFields(t *testing.T, b []byte) {
	types, err := requestTypes()
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range types {
		name := mt.Descriptor().FullName()
		m := mt.New().Interface()
		if proto.Unmarshal(b, m) != nil {
			continue
		}
		got := hasUnknownFields(m.ProtoReflect())
		if err := checkKnown(m); (err != nil) != got || err != nil && err != errUnknownFields {
			t.Fatalf("%s: hasUnknownFields %v, but checkKnown returns %v", name, got, err)
		}
		want, err := wireUnknown(b, mt.Descriptor())
		if err != nil {
			t.Fatalf("%s: proto.Unmarshal accepts %x, the wire oracle cannot parse it", name, b)
		}
		if got != want {
			t.Fatalf("%s: hasUnknownFields = %v, the wire says %v, for %x (%v)", name, got, want, b, m)
		}

		cleared := proto.Clone(m)
		clearUnknown(cleared.ProtoReflect())
		out, err := deterministicMarshal.Marshal(cleared)
		if err != nil {
			t.Fatalf("%s: marshalling %v: %v", name, cleared, err)
		}
		again := mt.New().Interface()
		if err := proto.Unmarshal(out, again); err != nil {
			t.Fatalf("%s: unmarshalling %x, marshalled from %v: %v", name, out, cleared, err)
		}
		if !proto.Equal(again, cleared) {
			t.Fatalf("%s: %v does not survive marshalling: %v", name, cleared, again)
		}
		if differs := !proto.Equal(m, again); differs != got {
			t.Fatalf("%s: hasUnknownFields = %v, but clearing unknown fields changes the message: %v, for %x (%v)",
				name, got, differs, b, m)
		}
		if hasUnknownFields(again.ProtoReflect()) {
			t.Fatalf("%s: unknown fields found in %v, whose unknown fields were cleared", name, again)
		}
		if u, err := wireUnknown(out, mt.Descriptor()); err != nil || u {
			t.Fatalf("%s: the wire oracle finds unknown fields (%v, %v) in %x, whose unknown fields were cleared", name, u, err, out)
		}

		// Unknown fields survive re-encoding (as the front forwards them).
		out, err = deterministicMarshal.Marshal(m)
		if err != nil {
			t.Fatalf("%s: marshalling %v: %v", name, m, err)
		}
		again = mt.New().Interface()
		if err := proto.Unmarshal(out, again); err != nil {
			t.Fatalf("%s: unmarshalling %x, marshalled from %v: %v", name, out, m, err)
		}
		if hasUnknownFields(again.ProtoReflect()) != got {
			t.Fatalf("%s: hasUnknownFields = %v for %x, but %v after re-encoding", name, got, b, !got)
		}
	}
}

// field999 is field 999, which no etcd request has, as a varint.
func field999() []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1)
}

func withField999[M proto.Message](m M) M {
	m.ProtoReflect().SetUnknown(field999())
	return m
}

func marshalSeed(t testing.TB, m proto.Message) []byte {
	b, err := deterministicMarshal.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unknownFieldSeeds(t testing.TB) [][]byte {
	put := func() *pb.PutRequest {
		return &pb.PutRequest{Key: []byte("/app/k"), Value: []byte("v"), Lease: 7, PrevKv: true}
	}
	rng := func() *pb.RangeRequest {
		return &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), Limit: 10, Revision: 3}
	}
	del := func() *pb.DeleteRangeRequest {
		return &pb.DeleteRangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")}
	}
	opPut := func(p *pb.PutRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
	}
	opTxn := func(x *pb.TxnRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: x}}
	}
	cmp := func() *pb.Compare {
		return &pb.Compare{Key: []byte("/app/k"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte("v")}}
	}
	txn := func(deep *pb.PutRequest) *pb.TxnRequest {
		return &pb.TxnRequest{
			Compare: []*pb.Compare{cmp()},
			Success: []*pb.RequestOp{opPut(put()), opTxn(&pb.TxnRequest{
				Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut(deep)}})},
				Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: del()}}},
			})},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: rng()}}},
		}
	}
	msgs := []proto.Message{
		rng(), put(), del(), txn(put()), txn(withField999(put())),
		&pb.TxnRequest{Compare: []*pb.Compare{withField999(cmp())}},
		&pb.CompactionRequest{Revision: 5, Physical: true},
		&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("/app/"), RangeEnd: []byte("/app0"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE},
			PrevKv: true, WatchId: 3, Fragment: true}}},
		&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: withField999(&pb.WatchCreateRequest{Key: []byte("/app/")})}},
		&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 3}}},
		&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: withField999(&pb.WatchProgressRequest{})}},
		&pb.LeaseGrantRequest{TTL: 10, ID: 5}, &pb.LeaseRevokeRequest{ID: 5}, &pb.LeaseKeepAliveRequest{ID: 5},
		&pb.LeaseTimeToLiveRequest{ID: 5, Keys: true},
		&pb.MemberAddRequest{PeerURLs: []string{"https://10.0.0.1:2380"}, IsLearner: true},
		&pb.AuthUserAddRequest{Name: "u", Password: "p"},
		&pb.AlarmRequest{Action: pb.AlarmRequest_GET, MemberID: 1, Alarm: pb.AlarmType_NOSPACE},
		&v3electionpb.CampaignRequest{Name: []byte("e"), Lease: 5, Value: []byte("v")},
		&v3electionpb.ProclaimRequest{Leader: withField999(&v3electionpb.LeaderKey{Name: []byte("e"), Key: []byte("e/1"), Rev: 2, Lease: 5}),
			Value: []byte("v")},
		&v3electionpb.ResignRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("e"), Key: []byte("e/1")}},
		&v3lockpb.LockRequest{Name: []byte("l"), Lease: 5}, &v3lockpb.UnlockRequest{Key: []byte("l/1")},
	}
	var seeds [][]byte
	for _, m := range msgs {
		b := marshalSeed(t, m)
		seeds = append(seeds, b, append(slices.Clone(b), field999()...))
	}
	tag := protowire.AppendTag
	// A known field with the wrong wire type: kept as unknown.
	seeds = append(seeds, protowire.AppendFixed64(tag(marshalSeed(t, put()), 1, protowire.Fixed64Type), 1))
	// A group-typed unknown field.
	g := tag(nil, 1000, protowire.StartGroupType)
	g = protowire.AppendVarint(tag(g, 1, protowire.VarintType), 1)
	seeds = append(seeds, tag(g, 1000, protowire.EndGroupType))
	for _, op := range oneofOps(t) {
		seeds = append(seeds, protowire.AppendBytes(tag(nil, 2, protowire.BytesType), op.b)) // TxnRequest.success
	}
	// A repeated enum, packed and not.
	filters := protowire.AppendVarint(protowire.AppendVarint(nil, 0), 1)
	create := protowire.AppendBytes(tag(nil, 3, protowire.BytesType), filters)
	seeds = append(seeds, protowire.AppendBytes(tag(nil, 1, protowire.BytesType), create))
	create = protowire.AppendVarint(tag(protowire.AppendVarint(tag(nil, 3, protowire.VarintType), 1), 3, protowire.VarintType), 0)
	seeds = append(seeds, protowire.AppendBytes(tag(nil, 1, protowire.BytesType), create))
	return seeds
}

type oneofOp struct {
	b       []byte
	unknown bool
}

// oneofOps are RequestOps whose oneof is set more than once: a member
// holding an unknown field, replaced by another member, takes it along;
// set again after the same member, it is merged and keeps it.
func oneofOps(t testing.TB) []oneofOp {
	tag := protowire.AppendTag
	rng := &pb.RangeRequest{Key: []byte("/app/k")}
	rangeWithUnknown := protowire.AppendBytes(tag(nil, 1, protowire.BytesType), marshalSeed(t, withField999(proto.Clone(rng))))
	plainRange := protowire.AppendBytes(tag(nil, 1, protowire.BytesType), marshalSeed(t, rng))
	plainPut := protowire.AppendBytes(tag(nil, 2, protowire.BytesType), marshalSeed(t, &pb.PutRequest{Key: []byte("/app/k")}))
	return []oneofOp{
		{slices.Concat(rangeWithUnknown, plainPut), false},
		{slices.Concat(rangeWithUnknown, plainRange), true},
		{slices.Concat(plainRange, rangeWithUnknown), true},
		{slices.Concat(plainPut, rangeWithUnknown), true},
		{slices.Concat(rangeWithUnknown, plainPut, plainRange), false},
		{slices.Concat(rangeWithUnknown, plainRange, plainPut), false},
	}
}

// TestUnknownFieldsWireOracle: the oracle itself, on cases whose answer is
// known (and, through checkUnknownFields, the decoder agrees).
func TestUnknownFieldsWireOracle(t *testing.T) {
	if _, err := requestTypes(); err != nil {
		t.Fatal(err)
	}
	txnOf := func(ops ...*pb.RequestOp) *pb.TxnRequest { return &pb.TxnRequest{Success: ops} }
	deep := txnOf(&pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: txnOf(&pb.RequestOp{
		Request: &pb.RequestOp_RequestTxn{RequestTxn: txnOf(&pb.RequestOp{
			Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: withField999(&pb.DeleteRangeRequest{Key: []byte("k")})}})}})}})
	wrongType := protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 1) // PutRequest.key as fixed32
	put := (&pb.PutRequest{}).ProtoReflect().Descriptor()
	type oracleCase struct {
		name    string
		b       []byte
		md      protoreflect.MessageDescriptor
		unknown bool
	}
	cases := []oracleCase{
		{"plain put", marshalSeed(t, &pb.PutRequest{Key: []byte("k")}), put, false},
		{"put with 999", marshalSeed(t, withField999(&pb.PutRequest{Key: []byte("k")})), put, true},
		{"deep txn", marshalSeed(t, deep), (&pb.TxnRequest{}).ProtoReflect().Descriptor(), true},
		{"wrong wire type", wrongType, put, true},
	}
	for i, op := range oneofOps(t) {
		cases = append(cases, oracleCase{fmt.Sprint("oneof ", i), op.b, (&pb.RequestOp{}).ProtoReflect().Descriptor(), op.unknown})
	}
	for _, c := range cases {
		got, err := wireUnknown(c.b, c.md)
		if err != nil || got != c.unknown {
			t.Errorf("%s: wireUnknown = %v, %v; want %v", c.name, got, err, c.unknown)
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(c.md.FullName())
		if err != nil {
			t.Fatal(err)
		}
		m := mt.New().Interface()
		if err := proto.Unmarshal(c.b, m); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if hasUnknownFields(m.ProtoReflect()) != c.unknown {
			t.Errorf("%s: hasUnknownFields = %v, want %v", c.name, !c.unknown, c.unknown)
		}
		checkUnknownFields(t, c.b)
	}
}

// FuzzUnknownFields: whatever bytes a client sends, hasUnknownFields finds
// the unknown fields of every request type they decode as, at any depth.
func FuzzUnknownFields(f *testing.F) {
	if _, err := requestTypes(); err != nil {
		f.Fatal(err)
	}
	for _, s := range unknownFieldSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(checkUnknownFields)
}
