package monitoring

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
)

// Severities are the values an alert's severity label may take.
var Severities = []string{"info", "warning", "critical"}

// RuleQueries loads a rule file as Prometheus does (unknown fields are
// errors; every expression and annotation template is parsed) and returns
// each rule's expression. It also holds every alert to the file's
// conventions: a for: of at least a minute, a severity label from
// Severities, and summary, description and runbook annotations.
func RuleQueries(path string) ([]Query, []error) {
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promql, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(errs) > 0 {
		return nil, errs
	}
	var qs []Query
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			where := "recording rule " + r.Record
			if r.Alert != "" {
				where = "alert " + r.Alert
				errs = append(errs, alertConventions(where, r)...)
				if seen[r.Alert] {
					errs = append(errs, fmt.Errorf("%s: defined twice", where))
				}
				seen[r.Alert] = true
			}
			qs = append(qs, Query{Where: where, Expr: r.Expr})
		}
	}
	if len(qs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no rules", path))
	}
	return qs, errs
}

func alertConventions(where string, r rulefmt.Rule) []error {
	var errs []error
	if time.Duration(r.For) < time.Minute {
		errs = append(errs, fmt.Errorf("%s: for: is %v; give it at least 1m so that one bad scrape does not page", where, r.For))
	}
	if sev := r.Labels["severity"]; !slices.Contains(Severities, sev) {
		errs = append(errs, fmt.Errorf("%s: severity label %q is not one of %v", where, sev, Severities))
	}
	for _, a := range []string{"summary", "description", "runbook"} {
		if r.Annotations[a] == "" {
			errs = append(errs, fmt.Errorf("%s: no %s annotation", where, a))
		}
	}
	return errs
}
