package authz

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseObject holds parseObject to encoding/json: whatever it accepts,
// encoding/json decodes to the same members with the same values, and
// whatever it refuses is invalid JSON, not an object, invalid UTF-8, nested
// too deep, or has a duplicate top-level name.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"a":1} `, `{"a":"x:y","b":{"c":1,"d":[1,{"e":":"}]}}`,
		`{"sub":"x","\u0073ub":"y"}`, `{"a":-0.5e+3,"b":true,"c":false,"d":null}`,
		`{"a":"\ud800"}`, `{"a":"é\n\"\\\/"}`, `[1]`, `{"a":01}`, `{"a":1,}`,
		`{"aud":["x","y"],"exp":1767225600}`, strings.Repeat("[", 70),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		obj, err := parseObject(s)
		if err != nil {
			var m map[string]any
			if !utf8.ValidString(s) || json.Unmarshal([]byte(s), &m) != nil || m == nil {
				return
			}
			msg := err.Error()
			if !strings.Contains(msg, "duplicate member name") && !strings.Contains(msg, "nested deeper") {
				t.Fatalf("refused valid JSON object %q: %v", s, err)
			}
			return
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(s)))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil || m == nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", s, err)
		}
		if len(m) != len(obj) {
			t.Fatalf("%q: %d members, encoding/json %d", s, len(obj), len(m))
		}
		for _, mb := range obj {
			if got, want := decodeValue(mb.value), m[mb.name]; !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: member %q = %#v, encoding/json %#v", s, mb.name, got, want)
			}
		}
	})
}

// TestParseObjectManyMembers: the duplicate check holds past the point
// where it switches from a scan to a set.
func TestParseObjectManyMembers(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 100 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"m` + strings.Repeat("x", i) + `":1`)
	}
	ok := b.String() + "}"
	if obj, err := parseObject(ok); err != nil || len(obj) != 100 {
		t.Fatalf("100 distinct members: %d, %v", len(obj), err)
	}
	for _, dup := range []string{`"m":2`, `"mxxxxxxxxxx":2`, `"m` + strings.Repeat("x", 99) + `":2`, `"\u006d":2`} {
		if _, err := parseObject(b.String() + "," + dup + "}"); err == nil || !strings.Contains(err.Error(), "duplicate") {
			t.Errorf("duplicate %s after 100 members: %v", dup, err)
		}
	}
}
