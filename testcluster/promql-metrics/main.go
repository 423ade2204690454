// Command promql-metrics prints the metric names each PromQL expression
// selects, as Prometheus' own parser (github.com/prometheus/prometheus/promql/parser)
// reads it: a JSON array of expressions on stdin, a JSON array of
// {"expr", "metrics", "error"} on stdout, one per expression, in order.
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
	Error   string   `json:"error,omitempty"`
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

// inspect parses expr and collects the names of the series it selects: a
// selector's metric name, or its equality matcher on __name__. A selector
// that matches names by regular expression is reported as an error, since
// it names no metric that can be checked.
func inspect(expr string) result {
	r := result{Expr: expr, Metrics: []string{}}
	node, err := promql.ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	names := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		selector, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if selector.Name != "" {
			names[selector.Name] = true
			return nil
		}
		for _, m := range selector.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			if m.Type == labels.MatchEqual {
				names[m.Value] = true
			} else if r.Error == "" {
				r.Error = fmt.Sprintf("selector %s matches metric names by %s", selector, m.Type)
			}
		}
		return nil
	})
	for name := range names {
		r.Metrics = append(r.Metrics, name)
	}
	sort.Strings(r.Metrics)
	return r
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
