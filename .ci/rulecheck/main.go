// rulecheck parses Prometheus rule files with Prometheus's own rule parser
// (model/rulefmt: YAML structure, PromQL of every expr, label and
// annotation templates), for the alerts shipped in the chart and in
// manifests/. It is its own module so that the Prometheus server module
// does not become a dependency of sidegate.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	bad := 0
	for _, path := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
		for _, err := range errs {
			fmt.Printf("%s: %v\n", path, err)
			bad++
		}
		if groups == nil {
			continue
		}
		rules := 0
		for _, g := range groups.Groups {
			rules += len(g.Rules)
		}
		fmt.Printf("%s: %d groups, %d rules parsed by Prometheus's rulefmt\n", path, len(groups.Groups), rules)
	}
	if bad > 0 {
		os.Exit(1)
	}
}
