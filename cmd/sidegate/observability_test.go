package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"gopkg.in/yaml.v3"

	"github.com/sidegate/sidegate/revocation/natstest"
)

// The Grafana dashboard and the Prometheus alerts ship in the Helm chart
// and, byte for byte, in manifests/.
const (
	obsDashboard         = "../../charts/sidegate/files/dashboard.json"
	obsAlerts            = "../../charts/sidegate/files/alerts.yaml"
	obsDashboardManifest = "../../manifests/grafana/sidegate-dashboard.json"
	obsAlertsManifest    = "../../manifests/prometheus/sidegate-rules.yaml"
	obsRunbookFile       = "../../docs/runbook.md"
	obsRunbookURL        = "https://github.com/sidegate/sidegate/blob/main/docs/runbook.md"
)

// obsNotOnDashboard are sidegate metric families the dashboard may leave
// out: opt-in ones a default configuration does not export anyway.
var obsNotOnDashboard = []string{"sidegate_check_stage_duration_seconds"}

// TestObservabilityAssets: every PromQL expression in the dashboard and the
// alerts names only metrics a running sidegate exports on /metrics (or
// Prometheus's own `up`), every sidegate metric family is on the dashboard,
// every alert is documented (its runbook_url is its section of
// docs/runbook.md, which has a "## <AlertName>" heading for it), and the
// manifests/ copies equal the chart's.
func TestObservabilityAssets(t *testing.T) {
	exported := obsExportedMetrics(t)

	// The manifests/ copies are the chart's files.
	for chart, manifest := range map[string]string{obsDashboard: obsDashboardManifest, obsAlerts: obsAlertsManifest} {
		a, b := obsRead(t, chart), obsRead(t, manifest)
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: copy it (cp %s %s)", manifest, chart, chart, manifest)
		}
	}

	checkNames := func(where, expr string) []string {
		names, err := promMetricNames(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return nil
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			switch {
			case n == "up":
			case !strings.HasPrefix(n, "sidegate_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_"):
				t.Errorf("%s: %s is not a sidegate, Go or process metric (in %q)", where, n, expr)
			case !exported[n]:
				t.Errorf("%s: metric %s is not exported by sidegate (in %q)", where, n, expr)
			}
		}
		return names
	}

	// Dashboard.
	exprs, vars := obsDashboardExprs(t)
	if len(exprs) < 15 {
		t.Errorf("dashboard: only %d panel expressions", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range checkNames("dashboard panel "+strconvQuote(e.panel), e.expr) {
			used[n] = true
		}
	}
	for _, v := range vars {
		checkNames("dashboard variable $"+v.name, v.expr)
	}
	for n := range exported {
		if !strings.HasPrefix(n, "sidegate_") || slices.Contains(obsNotOnDashboard, obsFamily(n, exported)) {
			continue
		}
		fam := obsFamily(n, exported)
		onDash := false
		for u := range used {
			if obsFamily(u, exported) == fam {
				onDash = true
			}
		}
		if !onDash {
			t.Errorf("dashboard: sidegate metric family %s is on no panel", fam)
		}
	}

	// Alerts.
	rules := obsAlertRules(t)
	if len(rules) < 10 {
		t.Errorf("alerts: only %d rules", len(rules))
	}
	runbookHeadings := map[string]bool{}
	for _, line := range strings.Split(string(obsRead(t, obsRunbookFile)), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimRight(line, " \t\r"), "## "); ok {
			runbookHeadings[strings.TrimSpace(h)] = true
		}
	}
	seen := map[string]bool{}
	for _, r := range rules {
		where := "alert " + r.Alert
		if r.Alert == "" {
			t.Errorf("alerts: a rule of group %s has no alert name (recording rules do not belong here)", r.group)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alerts: %s defined twice", r.Alert)
		}
		seen[r.Alert] = true
		checkNames(where, r.Expr)
		if r.For != "" {
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for: %v", where, err)
			}
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
			t.Errorf("%s: severity label %q, want critical, warning or info", where, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", where, a)
			}
		}
		if u, want := r.Annotations["runbook_url"], obsRunbookURL+"#"+strings.ToLower(r.Alert); u != "" && u != want {
			t.Errorf("%s: runbook_url %q, want %s", where, u, want)
		}
		if !runbookHeadings[r.Alert] {
			t.Errorf("%s: %s has no \"## %s\" heading", where, obsRunbookFile, r.Alert)
		}
		for k, v := range r.Annotations {
			if _, err := template.New(k).Funcs(obsTemplateFuncs).Parse(obsTemplateDefs + v); err != nil {
				t.Errorf("%s: annotation %s: %v", where, k, err)
			}
		}
	}
}

// obsExportedMetrics runs a daemon with an issuer and NATS revocation,
// makes it decide, and returns every sample name on its /metrics
// (histograms and summaries expanded to their series names).
func obsExportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	idp := newTestIdP(t)
	cfg := revConfig(t, idp, natstest.Start(t))
	cfg.path = t.TempDir() + "/sidegate.yaml"
	rd := startDaemon(t, cfg)
	rd.waitReady(t)
	client := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))
	tok := idp.mint(t, "ES256", "alice", nil)
	if resp := grpcCheck(t, client, map[string]string{"authorization": "Bearer " + tok}); resp.GetOkResponse() == nil {
		t.Fatalf("good token denied: %v", resp)
	}
	if code, _, _ := httpGet(t, rd.httpURL(), nil); code != 401 {
		t.Fatalf("no token: status %d, want 401", code)
	}
	m := scrape(t, rd.adminURL())
	exported := map[string]bool{}
	for _, sm := range regexp.MustCompile(`(?m)^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$`).FindAllStringSubmatch(m, -1) {
		name, typ := sm[1], sm[2]
		switch typ {
		case "histogram", "gaugehistogram":
			exported[name+"_bucket"], exported[name+"_sum"], exported[name+"_count"] = true, true, true
		case "summary":
			exported[name], exported[name+"_sum"], exported[name+"_count"] = true, true, true
		default:
			exported[name] = true
		}
	}
	for _, must := range []string{"sidegate_decisions_total", "sidegate_jwks_last_success_timestamp_seconds", "sidegate_revocation_lag_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !exported[must] {
			t.Fatalf("/metrics has no %s; the daemon under test is not fully wired", must)
		}
	}
	return exported
}

// obsFamily maps a series name to its metric family name.
func obsFamily(name string, exported map[string]bool) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && exported[base+"_bucket"] {
			return base
		}
	}
	return name
}

type obsExpr struct{ panel, expr string }
type obsVar struct{ name, expr string }

// obsDashboardExprs parses the dashboard, checks its frame (a ${datasource}
// variable of type datasource for prometheus, every panel and target on it)
// and returns every panel target expression and every query variable's
// metric selector.
func obsDashboardExprs(t *testing.T) ([]obsExpr, []obsVar) {
	t.Helper()
	type target struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
	}
	type panel struct {
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		Targets []target          `json:"targets"`
		Panels  []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Title         string            `json:"title"`
		UID           string            `json:"uid"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(obsRead(t, obsDashboard), &dash); err != nil {
		t.Fatalf("%s: %v", obsDashboard, err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion < 36 {
		t.Errorf("dashboard: title %q, uid %q, schemaVersion %d", dash.Title, dash.UID, dash.SchemaVersion)
	}
	var vars []obsVar
	hasDS := false
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			if v.Name == "datasource" && v.Query == "prometheus" {
				hasDS = true
			}
		case "query":
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			// label_values(selector, label)
			if inner, ok := strings.CutPrefix(q, "label_values("); ok {
				if i := strings.LastIndex(inner, ","); i > 0 {
					vars = append(vars, obsVar{v.Name, inner[:i]})
					continue
				}
			}
			t.Errorf("dashboard: variable %s: query %q is not label_values(selector, label)", v.Name, q)
		}
	}
	if !hasDS {
		t.Errorf("dashboard: no variable \"datasource\" of type datasource for prometheus")
	}
	var exprs []obsExpr
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("dashboard: panel: %v", err)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("dashboard: panel %q does not use the ${datasource} variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("dashboard: panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("dashboard: panel %q target %s does not use the ${datasource} variable", p.Title, tg.RefID)
				}
				exprs = append(exprs, obsExpr{p.Title, tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	return exprs, vars
}

type obsRule struct {
	group       string
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// obsAlertRules parses the alerts file strictly (unknown keys are errors,
// as in Prometheus's rule loader).
func obsAlertRules(t *testing.T) []obsRule {
	t.Helper()
	var doc struct {
		Groups []struct {
			Name     string    `yaml:"name"`
			Interval string    `yaml:"interval"`
			Rules    []obsRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(obsRead(t, obsAlerts)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", obsAlerts, err)
	}
	var rules []obsRule
	groups := map[string]bool{}
	for _, g := range doc.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("alerts: group name %q empty or repeated", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			r.group = g.Name
			rules = append(rules, r)
		}
	}
	return rules
}

// obsTemplateDefs are the variables Prometheus defines before expanding
// an annotation template.
const obsTemplateDefs = "{{$labels := .}}{{$externalLabels := .}}{{$externalURL := .}}{{$value := .}}"

// obsTemplateFuncs stand in for Prometheus's template functions, so that
// annotation templates can be parsed.
var obsTemplateFuncs = func() template.FuncMap {
	m := template.FuncMap{}
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml", "match", "title", "toUpper",
		"toLower", "graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain", "pathPrefix", "externalURL",
		"parseDuration", "toTime", "toDuration", "now", "urlUnescape"} {
		m[f] = func(...any) any { return nil }
	}
	return m
}()

func obsRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

// PromQL words that are not metric names.
var (
	promKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
		"inf": true, "nan": true,
	}
	promAggregations = map[string]bool{
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
		"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
		"limitk": true, "limit_ratio": true,
	}
	promFunctions = func() map[string]bool {
		m := map[string]bool{}
		for _, f := range strings.Fields(`abs absent absent_over_time ceil changes clamp clamp_max clamp_min
			day_of_month day_of_week day_of_year days_in_month delta deriv exp floor
			histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
			histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour idelta
			increase irate label_join label_replace ln log2 log10 minute month predict_linear rate
			resets round scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time
			timestamp vector year avg_over_time min_over_time max_over_time sum_over_time
			count_over_time quantile_over_time stddev_over_time stdvar_over_time last_over_time
			present_over_time mad_over_time acos acosh asin asinh atan atanh cos cosh sin sinh tan
			tanh deg pi rad info start end`) {
			m[f] = true
		}
		return m
	}()
)

// promMetricNames returns the metric names a PromQL expression selects, in
// order of appearance without repeats. It skips strings, label matchers
// ({...}), ranges and subqueries ([...]), numbers and durations, Grafana
// variables ($x, ${x}), comments, keywords, the label lists of by, without,
// on, ignoring, group_left and group_right, and function calls, whose names
// must be known PromQL functions or aggregations. Parentheses must balance.
func promMetricNames(expr string) ([]string, error) {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	// skipString returns the index after the string starting at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// skipTo returns the index after the closer matching the opener at i,
	// skipping strings.
	skipTo := func(i int, closer byte) (int, string, error) {
		for j := i + 1; j < len(expr); j++ {
			switch expr[j] {
			case '"', '\'', '`':
				k, err := skipString(j)
				if err != nil {
					return 0, "", err
				}
				j = k - 1
			case closer:
				return j + 1, expr[i+1 : j], nil
			}
		}
		return 0, "", fmt.Errorf("unclosed %q at %d", expr[i], i)
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	depth := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case strings.ContainsRune(" \t\r\n", rune(c)):
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{':
			j, inner, err := skipTo(i, '}')
			if err != nil {
				return nil, err
			}
			if strings.Contains(inner, "__name__") {
				return nil, fmt.Errorf("__name__ matchers are not supported: name metrics directly")
			}
			i = j
		case c == '[':
			j, _, err := skipTo(i, ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			i++
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, _, err := skipTo(i, '}')
				if err != nil {
					return nil, err
				}
				i = j
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			// Numbers (1, 0.99, 1e3, 0x1f) and durations (5m, 1h30m).
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				if (expr[i] == 'e' || expr[i] == 'E') && i+1 < len(expr) && (expr[i+1] == '+' || expr[i+1] == '-') {
					i++
				}
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			lower := strings.ToLower(word)
			next := nextNonSpace(j)
			i = j
			switch {
			case promKeywords[lower]:
				if lower != "offset" && lower != "bool" && lower != "and" && lower != "or" && lower != "unless" &&
					lower != "atan2" && lower != "inf" && lower != "nan" && next < len(expr) && expr[next] == '(' {
					// a label list
					k, _, err := skipTo(next, ')')
					if err != nil {
						return nil, err
					}
					i = k
				}
			case promAggregations[word]:
				// followed by ( or by a by/without clause
			case next < len(expr) && expr[next] == '(':
				if !promFunctions[word] {
					return nil, fmt.Errorf("unknown function %s", word)
				}
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		default:
			// operators, commas, @
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced parentheses")
	}
	return names, nil
}

// TestPromMetricNames pins the tokenizer the observability test relies on.
func TestPromMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (decision) (rate(sidegate_decisions_total{job=~"$job", reason!="no_token"}[5m]))`:    {"sidegate_decisions_total"},
		`histogram_quantile(0.99, sum by (le, transport) (rate(a_bucket[$__rate_interval]))) > 0.01`: {"a_bucket"},
		`time() - max by (issuer) (b{x="}"})`:                                                        {"b"},
		`sum(rate(c[5m])) without (instance) / on (job) group_left (issuer) d offset 1h`:             {"c", "d"},
		`x > 3 * x[1h:5m] offset 1h and y unless bool z == 1e+3`:                                     {"x", "y", "z"},
		`absent(up{job=~".*sidegate.*"}) or up == 0`:                                                 {"up"},
		`sidegate_decisions_total{job=~"$job"}`:                                                      {"sidegate_decisions_total"},
		`topk(5, ${metric}) + inf + NaN`:                                                             nil,
	} {
		got, err := promMetricNames(expr)
		if err != nil {
			t.Errorf("%q: %v", expr, err)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", expr, got, want)
		}
	}
	for _, bad := range []string{`rate(x[5m]`, `x)`, `hisogram_quantile(0.9, x)`, `x{a="b"`, `{__name__="x"}`, `x{a="b}`} {
		if got, err := promMetricNames(bad); err == nil {
			t.Errorf("%q: no error, got %v", bad, got)
		}
	}
}
