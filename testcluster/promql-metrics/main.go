// Command promql-metrics prints the metric names each PromQL expression
// selects, as Prometheus' own parser (github.com/prometheus/prometheus/promql/parser)
// reads it: a JSON array of expressions on stdin, a JSON array of
// {"expr", "metrics", "labels", "error"} on stdout, one per expression, in
// order.
// An expression that does not parse has its parser error in "error".
//
// `promql-metrics rules` instead checks a rules file (the `groups:` of a
// Prometheus rules file or of a PrometheusRule's spec) on stdin as
// Prometheus loads one (rulefmt: fields, durations, expressions, and the
// templates of labels and annotations), printing {"errors": [...]}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// The options a Prometheus server has by default (no experimental
// functions), so an expression that parses here loads in a rule file.
var promql = parser.NewParser(parser.Options{})

type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	// Labels each metric is matched or grouped on: a selector's matchers,
	// and the `by` labels of each aggregation over it.
	Labels map[string][]string `json:"labels"`
	Error  string              `json:"error,omitempty"`
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	if len(os.Args) > 1 && os.Args[1] == "rules" {
		checkRules(input)
		return
	}
	var exprs []string
	if err := json.Unmarshal(input, &exprs); err != nil {
		fail("parse the input (a JSON array of strings): %v", err)
	}
	results := make([]result, 0, len(exprs))
	for _, expr := range exprs {
		results = append(results, inspect(expr))
	}
	out, err := json.Marshal(results)
	if err != nil {
		fail("encode the result: %v", err)
	}
	fmt.Println(string(out))
}

// inspect parses expr and collects the metrics it selects and the labels
// it reads of each.
func inspect(expr string) result {
	r := result{Expr: expr, Metrics: []string{}, Labels: map[string][]string{}}
	node, err := promql.ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	labelSets := map[string]map[string]bool{}
	addLabel := func(metric, label string) {
		if labelSets[metric] == nil {
			labelSets[metric] = map[string]bool{}
		}
		labelSets[metric][label] = true
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := selectorName(n, &r)
			if name == "" {
				return nil
			}
			if labelSets[name] == nil {
				labelSets[name] = map[string]bool{}
			}
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName {
					addLabel(name, m.Name)
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			// `by` labels must be on the series aggregated, here the
			// selectors directly below (not below a nested aggregation).
			for _, name := range selectorsBelow(n.Expr, &r) {
				for _, label := range n.Grouping {
					addLabel(name, label)
				}
			}
		}
		return nil
	})
	for name, set := range labelSets {
		r.Metrics = append(r.Metrics, name)
		list := []string{}
		for label := range set {
			list = append(list, label)
		}
		sort.Strings(list)
		r.Labels[name] = list
	}
	sort.Strings(r.Metrics)
	return r
}

// selectorName is the metric a selector selects: its name, or its equality
// matcher on __name__. A selector that matches names by regular expression
// names no metric that can be checked: an error.
func selectorName(selector *parser.VectorSelector, r *result) string {
	if selector.Name != "" {
		return selector.Name
	}
	for _, m := range selector.LabelMatchers {
		if m.Name != labels.MetricName {
			continue
		}
		if m.Type == labels.MatchEqual {
			return m.Value
		}
		if r.Error == "" {
			r.Error = fmt.Sprintf("selector %s matches metric names by %s", selector, m.Type)
		}
	}
	return ""
}

// selectorsBelow lists the metrics an expression selects, not looking
// into aggregations (their output has only their own labels).
func selectorsBelow(node parser.Node, r *result) []string {
	names := []string{}
	parser.Inspect(node, func(n parser.Node, path []parser.Node) error {
		for _, p := range path {
			if _, nested := p.(*parser.AggregateExpr); nested {
				return nil
			}
		}
		if selector, ok := n.(*parser.VectorSelector); ok {
			if name := selectorName(selector, r); name != "" {
				names = append(names, name)
			}
		}
		return nil
	})
	return names
}

// checkRules prints what Prometheus finds wrong in a rules file.
func checkRules(content []byte) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	_, errs := rulefmt.Parse(content, false, model.UTF8Validation, promql, logger)
	messages := []string{}
	for _, err := range errs {
		messages = append(messages, err.Error())
	}
	out, err := json.Marshal(map[string][]string{"errors": messages})
	if err != nil {
		fail("encode the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "promql-metrics: "+format+"\n", args...)
	os.Exit(1)
}
