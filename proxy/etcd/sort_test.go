package etcd

import (
	"fmt"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestFilteredSortIsTotal: a filtered range sorted on a target readable
// keys tie on comes back in one order, whatever hidden keys lie around them
// (etcd's sort is not stable: its order would tell that something hidden
// changed); keys_only with a sort on values is sorted on the values and
// answers none.
func TestFilteredSortIsTotal(t *testing.T) {
	e := newEnv(t, envConfig{})
	for _, k := range []string{"/app/k1", "/app/k2", "/app/k3", "/app/k4"} {
		e.put(t, k, "same")
	}
	kv := e.kv(t, "web")
	keys := func(r *pb.RangeRequest) []string {
		t.Helper()
		resp, err := kv.Range(testCtx(t), r)
		mustOK(t, err)
		var out []string
		for _, x := range resp.Kvs {
			out = append(out, string(x.Key)+"="+string(x.Value))
		}
		return out
	}
	asc := &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_ASCEND}
	desc := &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_NONE, Limit: 3}
	wantAsc := []string{"/app/k1=same", "/app/k2=same", "/app/k3=same", "/app/k4=same"}
	for round := range 6 {
		// Hidden keys between and around the readable ones.
		for i := range 5 * round {
			e.put(t, fmt.Sprintf("/app/secret/%d-%d", round, i), "hidden")
		}
		if got := keys(asc); !slices.Equal(got, wantAsc) {
			t.Fatalf("round %d: sorted by version: %v, want %v", round, got, wantAsc)
		}
		// CREATE with order NONE is ascending, as etcd reads it; limit 3.
		if got := keys(desc); !slices.Equal(got, wantAsc[:3]) {
			t.Fatalf("round %d: sorted by create: %v, want %v", round, got, wantAsc[:3])
		}
	}

	// Sorted on values, keys only.
	for k, v := range map[string]string{"/app/v/1": "c", "/app/v/2": "a", "/app/v/3": "b"} {
		e.put(t, k, v)
	}
	e.put(t, "/app/secret/v", "0")
	byValue := &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), SortTarget: pb.RangeRequest_VALUE,
		SortOrder: pb.RangeRequest_DESCEND, KeysOnly: true}
	want := []string{"/app/k4=", "/app/k3=", "/app/k2=", "/app/k1=", "/app/v/1=", "/app/v/3=", "/app/v/2="}
	if got := keys(byValue); !slices.Equal(got, want) {
		t.Fatalf("keys only, sorted by value descending: %v, want %v", got, want)
	}
}
