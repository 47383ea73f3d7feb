package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestShippedPolicyTestsPass(t *testing.T) {
	var out bytes.Buffer
	ok, err := Test(context.Background(), shipped, &out, false)
	if err != nil || !ok {
		t.Fatalf("Test = %v, %v\n%s", ok, err, out.String())
	}
	if !strings.Contains(out.String(), "PASS: ") {
		t.Errorf("no summary in\n%s", out.String())
	}
}

func TestFailingPolicyTests(t *testing.T) {
	var out bytes.Buffer
	ok, err := Test(context.Background(), "testdata/failing-test", &out, true)
	if err != nil || ok {
		t.Fatalf("Test = %v, %v", ok, err)
	}
	for _, want := range []string{"test_allows_everything: FAIL", "test_denies_by_default: PASS", "FAIL: 1/2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPolicyTestsErrors(t *testing.T) {
	for _, dir := range []string{"testdata/no-allow-rule", "testdata/broken-rego", t.TempDir() + "/nowhere"} {
		var out bytes.Buffer
		if ok, err := Test(context.Background(), dir, &out, false); ok || err == nil || !strings.HasPrefix(err.Error(), "policy: ") {
			t.Errorf("Test(%s) = %v, %v", dir, ok, err)
		}
	}
}
