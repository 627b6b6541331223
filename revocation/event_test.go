package revocation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseEvent(t *testing.T) {
	const iss = "https://login.example.com/"
	for _, tc := range []struct {
		name string
		in   string
		want Event // zero Kind: must be invalid
	}{
		{"jti", `{"jti":"4f1c","iss":"` + iss + `","exp":1767225600}`, Event{Kind: KindJTI, Iss: iss, Value: "4f1c", Exp: 1767225600}},
		{"jti without exp", `{"jti":"4f1c","iss":"` + iss + `"}`, Event{Kind: KindJTI, Iss: iss, Value: "4f1c"}},
		{"jti with fractional exp rounds up", `{"jti":"a","iss":"i","exp":1767225600.2}`, Event{Kind: KindJTI, Iss: "i", Value: "a", Exp: 1767225601}},
		{"sub", `{"sub":"usr_994","iss":"` + iss + `","issued_before":1767225600}`, Event{Kind: KindSub, Iss: iss, Value: "usr_994", IssuedBefore: 1767225600}},
		{"kid", `{"kid":"2024-rot-1","iss":"` + iss + `"}`, Event{Kind: KindKid, Iss: iss, Value: "2024-rot-1"}},
		{"unknown members ignored", `{"kid":"k","iss":"i","reason":"compromised","by":{"op":"alice"}}`, Event{Kind: KindKid, Iss: "i", Value: "k"}},
		{"exp ignored on kid", `{"kid":"k","iss":"i","exp":"whatever"}`, Event{Kind: KindKid, Iss: "i", Value: "k"}},

		{"empty", ``, Event{}},
		{"not JSON", `revoke everything`, Event{}},
		{"array", `[{"jti":"a","iss":"i"}]`, Event{}},
		{"null", `null`, Event{}},
		{"string", `"jti"`, Event{}},
		{"trailing data", `{"jti":"a","iss":"i"} {"kid":"k","iss":"i"}`, Event{}},
		{"no kind", `{"iss":"i"}`, Event{}},
		{"two kinds", `{"jti":"a","kid":"k","iss":"i"}`, Event{}},
		{"three kinds", `{"jti":"a","sub":"s","kid":"k","iss":"i","issued_before":1}`, Event{}},
		{"no iss", `{"jti":"a"}`, Event{}},
		{"empty iss", `{"jti":"a","iss":""}`, Event{}},
		{"iss not a string", `{"jti":"a","iss":7}`, Event{}},
		{"empty jti", `{"jti":"","iss":"i"}`, Event{}},
		{"jti a number", `{"jti":12,"iss":"i"}`, Event{}},
		{"jti null", `{"jti":null,"iss":"i"}`, Event{}},
		{"exp a string", `{"jti":"a","iss":"i","exp":"1767225600"}`, Event{}},
		{"exp zero", `{"jti":"a","iss":"i","exp":0}`, Event{}},
		{"exp negative", `{"jti":"a","iss":"i","exp":-5}`, Event{}},
		{"exp huge", `{"jti":"a","iss":"i","exp":1e300}`, Event{}},
		{"sub without cutoff", `{"sub":"s","iss":"i"}`, Event{}},
		{"sub cutoff a date", `{"sub":"s","iss":"i","issued_before":"2026-01-01T00:00:00Z"}`, Event{}},
		{"sub cutoff bool", `{"sub":"s","iss":"i","issued_before":true}`, Event{}},
		{"kid object", `{"kid":{"x":1},"iss":"i"}`, Event{}},
		{"invalid UTF-8", "{\"kid\":\"k\",\"iss\":\"https://i\xff/\"}", Event{}},
		{"oversized", `{"jti":"a","iss":"i","pad":"` + strings.Repeat("x", MaxEventSize) + `"}`, Event{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEvent([]byte(tc.in))
			if tc.want.Kind == "" {
				if err == nil {
					t.Fatalf("ParseEvent = %+v, want an error", got)
				}
				if !errors.Is(err, ErrInvalidEvent) {
					t.Errorf("error %v does not wrap ErrInvalidEvent", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if got != tc.want {
				t.Fatalf("ParseEvent = %+v, want %+v", got, tc.want)
			}
			// The wire form round-trips.
			data, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseEvent(data)
			if err != nil || again != got {
				t.Fatalf("round trip: %s -> %+v, %v", data, again, err)
			}
		})
	}
}

// FuzzParseEvent: no input panics; whatever parses has exactly the fields
// its kind needs and marshals back to an equal event.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"jti":"4f1c","iss":"https://login.example.com/","exp":1767225600}`,
		`{"sub":"usr_994","iss":"https://login.example.com/","issued_before":1767225600}`,
		`{"kid":"2024-rot-1","iss":"https://login.example.com/"}`,
		`{"jti":"a","kid":"k","iss":"i"}`, `{"jti":"a","iss":"i","exp":1.5e9}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ParseEvent(data)
		if err != nil {
			return
		}
		if ev.Iss == "" || ev.Value == "" {
			t.Fatalf("parsed an event without iss or value: %+v", ev)
		}
		switch ev.Kind {
		case KindJTI:
			if ev.Exp < 0 || ev.IssuedBefore != 0 {
				t.Fatalf("bad jti event %+v", ev)
			}
		case KindSub:
			if ev.IssuedBefore <= 0 || ev.Exp != 0 {
				t.Fatalf("bad sub event %+v", ev)
			}
		case KindKid:
			if ev.Exp != 0 || ev.IssuedBefore != 0 {
				t.Fatalf("bad kid event %+v", ev)
			}
		default:
			t.Fatalf("kind %q", ev.Kind)
		}
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseEvent(out)
		if err != nil || again != ev {
			t.Fatalf("round trip %q: %+v, %v; want %+v", out, again, err, ev)
		}
	})
}
