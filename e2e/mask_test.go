package e2e

import (
	"regexp"
	"strings"
)

// masks hide what legitimately differs between two runs of the same
// command: revisions, IDs, hashes, timings, sizes, endpoints and the run's
// own key prefix.
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(?m)^\{"level":.*\n?`), ""},
	{regexp.MustCompile(`"key":"[^"]*"`), `"key":"K"`},
	{regexp.MustCompile(`"(ClusterID|MemberID|Revision|RaftTerm|CreateRevision|ModRevision|Version|Lease)" : \d+`), `"$1" : N`},
	{regexp.MustCompile(`https://127\.0\.0\.1:\d+`), "ENDPOINT"},
	{regexp.MustCompile(`http://127\.0\.0\.1:\d+`), "PEER"},
	{regexp.MustCompile(`"(cluster_id|member_id|revision|raft_term|mod_revision|create_revision|compact_revision|ID|id|leader|raftIndex|raftTerm|raftAppliedIndex|dbSize|dbSizeInUse|dbSizeQuota|hash|hash_revision|lease|version|storageVersion|downgradeInfo)":("[^"]*"|-?\d+)`), `"$1":N`},
	{regexp.MustCompile(`\b[0-9a-f]{14,16}\b`), "HEX"},
	{regexp.MustCompile(`\d+(\.\d+)?\s?(ns|µs|us|ms|s|kB|MB|B)\b`), "QTY"},
	{regexp.MustCompile(`remaining\(-?\d+s\)`), "remaining(N)"},
	{regexp.MustCompile(`(compacted revision|hash|revision) \d+`), "$1 N"},
	{regexp.MustCompile(`\b\d{5,}\b`), "NUM"},
	{regexp.MustCompile(`[A-Za-z0-9+/=]{40,}`), "B64"},
}

func mask(s, prefix string) string {
	if prefix != "" {
		s = strings.ReplaceAll(s, prefix, "/P")
	}
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.with)
	}
	return s
}
