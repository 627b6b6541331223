// Command schemagen writes kubeconform "standalone-strict" JSON schemas,
// offline, from the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json
// in the k8s.io/kubernetes module) and from CustomResourceDefinition YAML files.
//
// Output: <out>/<kind lowercased><KindSuffix>.json, the layout kubeconform
// reads with -schema-location '<out>/{{.ResourceKind}}{{.KindSuffix}}.json'
// (KindSuffix: "-<first label of the group>-<version>", or "-<version>" for core).
//
//	schemagen -swagger swagger.json -out DIR [crd.yaml ...]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

type obj = map[string]any

func main() {
	swagger := flag.String("swagger", "", "Kubernetes OpenAPI v2 document (swagger.json)")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if *swagger == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: schemagen -swagger swagger.json -out DIR [crd.yaml ...]")
		os.Exit(2)
	}
	if err := run(*swagger, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(swaggerPath, out string, crdFiles []string) error {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]obj `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", swaggerPath, err)
	}
	if len(doc.Definitions) == 0 {
		return fmt.Errorf("%s: no definitions", swaggerPath)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	g := &gen{defs: doc.Definitions, written: map[string]string{}}

	names := make([]string, 0, len(doc.Definitions))
	for n := range doc.Definitions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		def := doc.Definitions[name]
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) == 0 {
			continue
		}
		schema := g.inline(def, map[string]bool{name: true})
		strict(schema)
		for _, x := range gvks {
			gvk, _ := x.(obj)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			if err := g.write(out, group, version, kind, name, schema); err != nil {
				return err
			}
		}
	}

	// CRDs: metadata gets the full (strict) ObjectMeta schema.
	objectMeta := g.inline(obj{"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}, map[string]bool{})
	strict(objectMeta)
	for _, f := range crdFiles {
		n, err := g.crds(out, f, objectMeta)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: no CustomResourceDefinition with a schema", f)
		}
	}
	fmt.Fprintf(os.Stderr, "schemagen: %d schemas in %s\n", len(g.written), out)
	return nil
}

type gen struct {
	defs    map[string]obj
	written map[string]string // file name -> source, to catch collisions
}

func fileName(group, version, kind string) string {
	suffix := "-" + strings.ToLower(version)
	if group != "" {
		suffix = "-" + strings.ToLower(strings.Split(group, ".")[0]) + suffix
	}
	return strings.ToLower(kind) + suffix + ".json"
}

func (g *gen) write(out, group, version, kind, source string, schema obj) error {
	name := fileName(group, version, kind)
	if prev, ok := g.written[name]; ok {
		// Same short name from two groups (e.g. x.k8s.io and x.example.com):
		// keep the first, as kubeconform could only ever load one of them.
		fmt.Fprintf(os.Stderr, "schemagen: %s: keeping %s, skipping %s\n", name, prev, source)
		return nil
	}
	g.written[name] = source
	b, err := json.Marshal(schema)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, name), b, 0o644)
}

// inline returns a copy of s with every $ref replaced by the (inlined)
// definition it names. A $ref back into a definition already being inlined
// (JSONSchemaProps) becomes {}: anything is accepted below that point.
func (g *gen) inline(s obj, stack map[string]bool) obj {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		def, ok := g.defs[name]
		if !ok || stack[name] {
			return obj{}
		}
		if name == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
			// A string in OpenAPI; manifests also write plain numbers (cpu: 1).
			return obj{"oneOf": []any{obj{"type": "string"}, obj{"type": "number"}}}
		}
		stack[name] = true
		r := g.inline(def, stack)
		delete(stack, name)
		return r
	}
	// Types the OpenAPI document describes with a format, not a schema.
	if f, _ := s["format"].(string); f == "int-or-string" {
		return obj{"oneOf": []any{obj{"type": "string"}, obj{"type": "integer"}}}
	}
	out := obj{}
	for k, v := range s {
		if k == "description" || strings.HasPrefix(k, "x-") {
			continue
		}
		switch k {
		case "properties", "patternProperties", "definitions":
			m, _ := v.(obj)
			props := obj{}
			for pk, pv := range m {
				if ps, ok := pv.(obj); ok {
					props[pk] = g.inline(ps, stack)
				}
			}
			out[k] = props
			continue
		}
		out[k] = g.value(v, stack)
	}
	return out
}

func (g *gen) value(v any, stack map[string]bool) any {
	switch v := v.(type) {
	case obj:
		return g.inline(v, stack)
	case []any:
		r := make([]any, len(v))
		for i, e := range v {
			r[i] = g.value(e, stack)
		}
		return r
	}
	return v
}

// strict sets additionalProperties: false on every object schema that lists
// properties (and says nothing else about extra ones), and lets optional
// fields be null, as kubernetes-json-schema's standalone-strict schemas do.
func strict(s obj) {
	if props, ok := s["properties"].(obj); ok {
		if _, set := s["additionalProperties"]; !set {
			if p, _ := s["x-kubernetes-preserve-unknown-fields"].(bool); !p {
				s["additionalProperties"] = false
			}
		}
		req := map[string]bool{}
		if r, ok := s["required"].([]any); ok {
			for _, x := range r {
				if n, ok := x.(string); ok {
					req[n] = true
				}
			}
		}
		for name, pv := range props {
			ps, ok := pv.(obj)
			if !ok {
				continue
			}
			strict(ps)
			if !req[name] {
				nullable(ps)
			}
		}
	}
	for _, k := range []string{"items", "additionalProperties", "not"} {
		if c, ok := s[k].(obj); ok {
			strict(c)
		}
	}
	if pp, ok := s["patternProperties"].(obj); ok {
		for _, c := range pp {
			if cs, ok := c.(obj); ok {
				strict(cs)
			}
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if l, ok := s[k].([]any); ok {
			for _, c := range l {
				if cs, ok := c.(obj); ok {
					strict(cs)
				}
			}
		}
	}
}

func nullable(s obj) {
	if t, ok := s["type"].(string); ok {
		s["type"] = []any{t, "null"}
	}
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// crds writes one schema per served version of every CRD in file.
func (g *gen) crds(out, file string, objectMeta obj) (int, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range docSep.Split(string(raw), -1) {
		if len(bytes.TrimSpace([]byte(d))) == 0 {
			continue
		}
		var crd struct {
			Kind string `json:"kind"`
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Schema struct {
						OpenAPIV3Schema obj `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(d), &crd); err != nil {
			return n, fmt.Errorf("%s: %w", file, err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			continue
		}
		for _, v := range crd.Spec.Versions {
			s := v.Schema.OpenAPIV3Schema
			if s == nil {
				continue
			}
			s = crdSchema(s)
			strict(s)
			// Some CRDs (Istio's) describe only spec and status.
			props, _ := s["properties"].(obj)
			if props == nil {
				props = obj{}
				s["properties"] = props
			}
			props["apiVersion"] = obj{"type": "string"}
			props["kind"] = obj{"type": "string"}
			props["metadata"] = objectMeta
			if _, set := s["additionalProperties"]; !set {
				if p, _ := s["x-kubernetes-preserve-unknown-fields"].(bool); !p {
					s["additionalProperties"] = false
				}
			}
			if err := g.write(out, crd.Spec.Group, v.Name, crd.Spec.Names.Kind, file, s); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// crdSchema copies a structural schema, turning x-kubernetes-int-or-string
// into a JSON-schema oneOf and dropping descriptions and other extensions
// (x-kubernetes-preserve-unknown-fields is kept for strict to read).
func crdSchema(s obj) obj {
	if b, _ := s["x-kubernetes-int-or-string"].(bool); b {
		r := obj{"oneOf": []any{obj{"type": "string"}, obj{"type": "integer"}}}
		if p, ok := s["pattern"]; ok {
			r["oneOf"] = []any{obj{"type": "string", "pattern": p}, obj{"type": "integer"}}
		}
		return r
	}
	out := obj{}
	for k, v := range s {
		if k == "description" || (strings.HasPrefix(k, "x-") && k != "x-kubernetes-preserve-unknown-fields") {
			continue
		}
		switch k {
		case "properties", "patternProperties":
			m, _ := v.(obj)
			props := obj{}
			for pk, pv := range m {
				if ps, ok := pv.(obj); ok {
					props[pk] = crdSchema(ps)
				}
			}
			out[k] = props
			continue
		}
		out[k] = crdValue(v)
	}
	return out
}

func crdValue(v any) any {
	switch v := v.(type) {
	case obj:
		return crdSchema(v)
	case []any:
		r := make([]any, len(v))
		for i, e := range v {
			r[i] = crdValue(e)
		}
		return r
	}
	return v
}
