package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sidegate/sidegate/authz"
)

// chartSchema is the Helm chart's values schema; its `config` is sidegate's
// configuration file.
const chartSchema = "../../charts/sidegate/values.schema.json"

// TestChartSchemaConfig: the chart's values schema describes sidegate's
// configuration with sidegate's own key names. Every key it lists under
// `config` is one sidegate reads, and the route policy objects (routes,
// their match and require, default_route, policy, csrf, reload), which the
// schema closes with additionalProperties: false to catch typos at helm
// time, list exactly sidegate's keys: a key added to sidegate but not to
// the schema would otherwise make helm refuse a valid configuration. Every
// value the schema's enums allow is one sidegate accepts.
func TestChartSchemaConfig(t *testing.T) {
	raw, err := os.ReadFile(chartSchema)
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(raw, &root); err != nil {
		t.Fatalf("%s: %v", chartSchema, err)
	}
	// at follows a path of object keys from the root, resolving a
	// "#/definitions/…" $ref at every step.
	var at func(node any, path ...string) map[string]any
	at = func(node any, path ...string) map[string]any {
		m, _ := node.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			m = at(root, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...)
		}
		if len(path) == 0 || m == nil {
			return m
		}
		return at(m[path[0]], path[1:]...)
	}
	keys := func(obj map[string]any) []string {
		var out []string
		for k := range at(obj, "properties") {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}

	config := at(root, "properties", "config")
	if config == nil {
		t.Fatal("no properties.config in the schema")
	}
	known := yamlKeys(reflect.TypeFor[Config]())
	for _, k := range keys(config) {
		if !slices.Contains(known, k) {
			t.Errorf("schema config.%s: sidegate has no such key (it has %v)", k, known)
		}
	}

	route := at(config, "properties", "routes", "items")
	defaultRoute := at(config, "properties", "default_route")
	for _, c := range []struct {
		where string
		obj   map[string]any
		want  []string
	}{
		{"config.routes[]", route, yamlKeys(reflect.TypeFor[authz.RouteConfig]())},
		{"config.routes[].match", at(route, "properties", "match"), yamlKeys(reflect.TypeFor[authz.RouteMatch]())},
		{"config.routes[].require", at(route, "properties", "require"), yamlKeys(reflect.TypeFor[authz.Requirements]())},
		// The default route has no match (sidegate refuses one).
		{"config.default_route", defaultRoute, slices.DeleteFunc(yamlKeys(reflect.TypeFor[authz.RouteConfig]()), func(k string) bool { return k == "match" })},
		{"config.default_route.require", at(defaultRoute, "properties", "require"), yamlKeys(reflect.TypeFor[authz.Requirements]())},
		{"config.policy", at(config, "properties", "policy"), yamlKeys(reflect.TypeFor[PolicyConfig]())},
		{"config.csrf", at(config, "properties", "csrf"), yamlKeys(reflect.TypeFor[authz.CSRFConfig]())},
		{"config.reload", at(config, "properties", "reload"), yamlKeys(reflect.TypeFor[ReloadConfig]())},
	} {
		if c.obj == nil {
			t.Errorf("schema: no %s", c.where)
			continue
		}
		if got := keys(c.obj); !slices.Equal(got, c.want) {
			t.Errorf("schema %s lists %v; sidegate's keys are %v", c.where, got, c.want)
		}
		if c.obj["additionalProperties"] != false {
			t.Errorf("schema %s: additionalProperties is not false, so a misspelt key passes helm", c.where)
		}
	}

	// Every enum value the schema allows, sidegate accepts.
	enum := func(obj any, where string) []string {
		var out []string
		values, _ := at(obj)["enum"].([]any)
		for _, v := range values {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		if len(out) == 0 || len(out) != len(values) {
			t.Fatalf("schema %s: no enum of strings", where)
		}
		return out
	}
	props := at(route, "properties")
	for _, auth := range enum(props["auth"], "routes[].auth") {
		for _, mode := range enum(props["mode"], "routes[].mode") {
			for _, csrf := range enum(props["csrf"], "routes[].csrf") {
				cfg := fmt.Sprintf(`
issuers:
  - {issuer: https://login.example.com/, jwks_uri: https://login.example.com/jwks, audiences: [a]}
routes:
  - {name: r, match: {path_prefix: /r/}, auth: %[1]s, mode: %[2]s, csrf: %[3]s}
default_route: {auth: %[1]s, mode: %[2]s, csrf: %[3]s}
policy: {mode: %[2]s}
csrf: {mode: %[3]s}
`, auth, mode, csrf)
				if _, err := ParseConfig([]byte(cfg)); err != nil {
					t.Errorf("auth %s, mode %s, csrf %s (allowed by the schema): %v", auth, mode, csrf, err)
				}
			}
		}
	}
	for _, c := range []struct {
		where     string
		obj, want any
	}{
		{"default_route.auth", at(defaultRoute, "properties", "auth"), props["auth"]},
		{"default_route.mode", at(defaultRoute, "properties", "mode"), props["mode"]},
		{"default_route.csrf", at(defaultRoute, "properties", "csrf"), props["csrf"]},
		{"policy.mode", at(config, "properties", "policy", "properties", "mode"), props["mode"]},
		{"csrf.mode", at(config, "properties", "csrf", "properties", "mode"), props["csrf"]},
	} {
		if got, want := at(c.obj)["enum"], at(c.want)["enum"]; got == nil || !reflect.DeepEqual(got, want) {
			t.Errorf("schema config.%s: enum %v, want the routes' %v", c.where, got, want)
		}
	}
}

// yamlKeys lists the YAML keys of a struct type's fields, sorted.
func yamlKeys(typ reflect.Type) []string {
	var out []string
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// TestChartRestartChecksum: in configReload: live, the pods roll exactly
// when a section sidegate binds at start changes: the chart's
// checksum/config-restart hashes the sections restartOnly names.
func TestChartRestartChecksum(t *testing.T) {
	data, err := os.ReadFile("../../charts/sidegate/templates/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`checksum/config-restart: \{\{ pick \.Values\.config((?: "[a-z_]+")+) \|`).FindSubmatch(data)
	if m == nil {
		t.Fatal("deployment.yaml has no checksum/config-restart over pick .Values.config")
	}
	var keys []string
	for _, q := range strings.Fields(string(m[1])) {
		keys = append(keys, strings.Trim(q, `"`))
	}
	if !slices.Equal(keys, restartBound) {
		t.Errorf("chart hashes %q, sidegate binds %q at start", keys, restartBound)
	}
	if got := restartSections(&Config{}); len(got) != len(restartBound) {
		t.Errorf("restartSections has %d sections, restartBound %d", len(got), len(restartBound))
	}
}
