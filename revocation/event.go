// Package revocation holds the revocation denylist, a bloom filter in front
// of exact sets read without locks on the request path, and its feed: a
// NATS JetStream stream of revocation events, replayed at start and followed
// live. It also publishes events for `sidegate revoke`.
package revocation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxEventSize is the largest event accepted, in bytes.
const MaxEventSize = 4 << 10

// Kind names what an event revokes; it is also the label of
// sidegate_revocation_entries.
type Kind string

const (
	KindJTI Kind = "jti" // one token
	KindSub Kind = "sub" // every token of a subject issued before a time
	KindKid Kind = "kid" // every token signed by a key
)

// Event is one revocation, the JSON published on the NATS subject:
//
//	{"jti": "4f1c…", "iss": "https://login.example.com/", "exp": 1767225600}
//	{"sub": "usr_994", "iss": "https://login.example.com/", "issued_before": 1767225600}
//	{"kid": "2024-rot-1", "iss": "https://login.example.com/"}
type Event struct {
	Kind Kind
	Iss  string
	// Value is the jti, sub or kid.
	Value string
	// Exp (jti events; 0 when absent) is the token's expiry: the entry can
	// go once the token is dead anyway.
	Exp int64
	// IssuedBefore (sub events) is the cutoff: tokens with an earlier iat
	// are revoked.
	IssuedBefore int64
}

// Errors of ParseEvent. Each wraps ErrInvalidEvent.
var (
	ErrInvalidEvent = errors.New("revocation: invalid event")
)

// ParseEvent reads one event strictly: a JSON object of at most
// MaxEventSize bytes with exactly one of jti, sub or kid (a non-empty
// string), a non-empty string iss, and for sub an issued_before; numbers
// must be positive integers (NumericDate seconds) that fit in int64.
// Unknown members are ignored, so that producers can add fields.
func ParseEvent(data []byte) (Event, error) {
	bad := func(format string, args ...any) (Event, error) {
		return Event{}, fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxEventSize {
		return bad("%d bytes, over the %d-byte limit", len(data), MaxEventSize)
	}
	// JSON is UTF-8 (RFC 8259 §8.1); encoding/json would quietly turn
	// invalid bytes into U+FFFD, so the event would name something else.
	if !utf8.Valid(data) {
		return bad("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return bad("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("data after the JSON object")
	}
	var ev Event
	kinds := 0
	for _, k := range []Kind{KindJTI, KindSub, KindKid} {
		v, ok := m[string(k)]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok || s == "" {
			return bad("%s must be a non-empty string", k)
		}
		ev.Kind, ev.Value = k, s
		kinds++
	}
	if kinds != 1 {
		return bad("exactly one of jti, sub or kid is required, found %d", kinds)
	}
	iss, ok := m["iss"].(string)
	if !ok || iss == "" {
		return bad("iss must be a non-empty string")
	}
	ev.Iss = iss
	var err error
	switch ev.Kind {
	case KindJTI:
		if ev.Exp, err = seconds(m, "exp", false); err != nil {
			return bad("%v", err)
		}
	case KindSub:
		if ev.IssuedBefore, err = seconds(m, "issued_before", true); err != nil {
			return bad("%v", err)
		}
	}
	return ev, nil
}

// seconds reads a positive integer NumericDate.
func seconds(m map[string]any, name string, required bool) (int64, error) {
	v, ok := m[name]
	if !ok {
		if required {
			return 0, fmt.Errorf("%s is required", name)
		}
		return 0, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s must be a number", name)
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		if i <= 0 {
			return 0, fmt.Errorf("%s must be positive", name)
		}
		return i, nil
	}
	// A fractional NumericDate is allowed; it is rounded up, so a cutoff
	// or expiry is never earlier than asked.
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f <= 0 || f >= math.MaxInt64 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s must be a positive number of seconds", name)
	}
	return int64(math.Ceil(f)), nil
}

// MarshalJSON writes the event in its wire form.
func (ev Event) MarshalJSON() ([]byte, error) {
	m := map[string]any{"iss": ev.Iss, string(ev.Kind): ev.Value}
	switch ev.Kind {
	case KindJTI:
		if ev.Exp > 0 {
			m["exp"] = ev.Exp
		}
	case KindSub:
		m["issued_before"] = ev.IssuedBefore
	case KindKid:
	default:
		return nil, fmt.Errorf("revocation: event kind %q", ev.Kind)
	}
	return json.Marshal(m)
}

// Token is what the denylist needs to know of a verified token.
type Token struct {
	Issuer, Subject, ID, KeyID string
	// IssuedAt is the iat in seconds, 0 when the token has none.
	IssuedAt float64
	// Now is the decision's time in unix seconds, so that expiry is judged
	// by the same clock as the token; 0 means the denylist's own clock.
	Now int64
}
