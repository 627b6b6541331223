package main

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sidegate/sidegate/revocation"
)

func TestRevokeFlagsEvent(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://i/","jti":"j-1","exp":1800003600,"sub":"alice"}`))
	tok := "eyJhbGciOiJFUzI1NiJ9." + payload + ".c2ln"
	noJTI := "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://i/","sub":"a"}`)) + ".c2ln"
	for _, tc := range []struct {
		name    string
		f       revokeFlags
		want    revocation.Event
		wantErr string
	}{
		{"jti", revokeFlags{jti: "j", iss: "https://i/"}, revocation.Event{Kind: revocation.KindJTI, Iss: "https://i/", Value: "j"}, ""},
		{"jti with exp", revokeFlags{jti: "j", iss: "i", exp: "1800003600"}, revocation.Event{Kind: revocation.KindJTI, Iss: "i", Value: "j", Exp: 1800003600}, ""},
		{"jti with RFC 3339 exp", revokeFlags{jti: "j", iss: "i", exp: "2027-01-15T08:00:00Z"}, revocation.Event{Kind: revocation.KindJTI, Iss: "i", Value: "j", Exp: 1800000000}, ""},
		{"sub defaults to now", revokeFlags{sub: "alice", iss: "i"}, revocation.Event{Kind: revocation.KindSub, Iss: "i", Value: "alice", IssuedBefore: now.Unix() + 1}, ""},
		{"sub before", revokeFlags{sub: "alice", iss: "i", before: "1799990000"}, revocation.Event{Kind: revocation.KindSub, Iss: "i", Value: "alice", IssuedBefore: 1799990000}, ""},
		{"kid", revokeFlags{kid: "k", iss: "i"}, revocation.Event{Kind: revocation.KindKid, Iss: "i", Value: "k"}, ""},
		{"token", revokeFlags{token: tok}, revocation.Event{Kind: revocation.KindJTI, Iss: "https://i/", Value: "j-1", Exp: 1800003601}, ""},
		{"token with Bearer prefix", revokeFlags{token: "Bearer " + tok}, revocation.Event{Kind: revocation.KindJTI, Iss: "https://i/", Value: "j-1", Exp: 1800003601}, ""},
		{"none", revokeFlags{iss: "i"}, revocation.Event{}, "exactly one"},
		{"two", revokeFlags{jti: "j", kid: "k", iss: "i"}, revocation.Event{}, "exactly one"},
		{"no iss", revokeFlags{jti: "j"}, revocation.Event{}, "--iss is required"},
		{"token iss differs", revokeFlags{token: tok, iss: "https://other/"}, revocation.Event{}, "differs"},
		{"token without jti", revokeFlags{token: noJTI}, revocation.Event{}, "no jti"},
		{"not a token", revokeFlags{token: "abc"}, revocation.Event{}, "not a compact JWT"},
		{"bad exp", revokeFlags{jti: "j", iss: "i", exp: "tomorrow"}, revocation.Event{}, "--exp"},
		{"exp with sub", revokeFlags{sub: "s", iss: "i", exp: "5"}, revocation.Event{}, "--exp goes with"},
		{"before with kid", revokeFlags{kid: "k", iss: "i", before: "5"}, revocation.Event{}, "--before with --sub"},
		{"negative before", revokeFlags{sub: "s", iss: "i", before: "-5"}, revocation.Event{}, "positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.event(now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("event() = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("event() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRevokeUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"revoke", "--iss", "i", "--jti", "j"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--nats URL") {
		t.Errorf("revoke without --nats: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"revoke", "--nats", "nats://127.0.0.1:1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "exactly one") {
		t.Errorf("revoke without a target: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"revoke", "--nats", "nats://127.0.0.1:1", "--iss", "i", "--jti", "j", "--timeout", "300ms"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "NATS at nats://127.0.0.1:1") {
		t.Errorf("revoke with NATS down: exit %d, stderr %q", code, errb.String())
	}
}

// TestRevokeRefusesUnknownIssuerWithConfig: with --config, an --iss that is
// not a configured issuer (a missing trailing slash, say) is refused before
// anything is published, since it could match no token.
func TestRevokeRefusesUnknownIssuerWithConfig(t *testing.T) {
	path := t.TempDir() + "/sidegate.yaml"
	if err := os.WriteFile(path, []byte(minimalConfig+"revocation: {nats: {url: \"nats://127.0.0.1:1\"}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"revoke", "--config", path, "--iss", "https://login.example.com", "--jti", "j"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "is not an issuer of") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the unknown issuer", code, errb.String())
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("nats://alice:s3cret@n1:4222,nats://n2:4222,tls://tok@n3:4222")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "tok@") || !strings.Contains(got, "n2:4222") {
		t.Fatalf("redactURL = %q", got)
	}
}

// TestIssuerCheckedSinkWarnsOnce: an event for an unconfigured issuer is
// still applied (harmless) and logged once, not once per event.
func TestIssuerCheckedSinkWarnsOnce(t *testing.T) {
	list, err := revocation.NewDenylist(revocation.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := &issuerCheckedSink{list: list, log: slog.New(slog.NewTextHandler(&logs, nil)), warned: map[string]bool{}}
	s.setIssuers(&Config{Issuers: []IssuerConfig{{Issuer: "https://i/"}}})
	for range 3 {
		s.Apply(revocation.Event{Kind: revocation.KindKid, Iss: "https://i", Value: "k"})
	}
	s.Apply(revocation.Event{Kind: revocation.KindKid, Iss: "https://i/", Value: "k"})
	if n := strings.Count(logs.String(), "not configured here"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	// An issuer added by a reload is known from then on.
	s.setIssuers(&Config{Issuers: []IssuerConfig{{Issuer: "https://i/"}, {Issuer: "https://new/"}}})
	s.Apply(revocation.Event{Kind: revocation.KindKid, Iss: "https://new/", Value: "k"})
	if n := strings.Count(logs.String(), "not configured here"); n != 1 {
		t.Fatalf("an event of a reloaded issuer was warned about:\n%s", logs.String())
	}
	if !list.Revoked(revocation.Token{Issuer: "https://i/", KeyID: "k"}) {
		t.Fatal("the configured issuer's kid is not revoked")
	}
}
