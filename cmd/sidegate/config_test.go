package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// designConfig is the example configuration of DESIGN.md, verbatim.
const designConfig = `
listen:
  grpc: 127.0.0.1:9191        # Envoy ext_authz v3
  http: 127.0.0.1:9192        # HTTP check (any path): 200 + headers, or 401/403
  admin: 127.0.0.1:9090       # /metrics, /healthz, /readyz
issuers:
  - issuer: https://login.example.com/        # exact match on iss
    jwks_uri: https://login.example.com/jwks  # or ` + "`discovery: true`" + ` (OIDC)
    audiences: [orders-api]                   # aud must contain one of these
    algorithms: [RS256, ES256]                # allowlist; ` + "`none`" + ` is never accepted
tokens:
  bearer: true                    # Authorization: Bearer <jwt>
  cookies: [ll_session_token]     # cookie names, in order
  leeway: 30s                     # clock skew for exp/nbf/iat
forward:
  claims:                         # upstream header: claim
    x-user-id: sub
  payload_header: x-jwt-payload   # base64url JSON of the verified claims; "" turns it off
revocation:
  nats:
    url: nats://127.0.0.1:4222
    subject: sidegate.revocations
    stream: SIDEGATE_REVOCATIONS
`

// minimalConfig is the least a valid configuration says.
const minimalConfig = `
issuers:
  - issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks
    audiences: [orders-api]
`

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return cfg
}

// configProblems parses yaml, which must fail with a problems list, and
// returns the list.
func configProblems(t *testing.T, yaml string) problems {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err == nil {
		t.Fatalf("ParseConfig accepted the configuration: %+v", cfg)
	}
	if cfg != nil {
		t.Errorf("ParseConfig returned a configuration with error %v", err)
	}
	var p problems
	if !errors.As(err, &p) {
		t.Fatalf("error %q (%T) is not a problems list", err, err)
	}
	return p
}

func TestParseConfigDesignExample(t *testing.T) {
	cfg := mustParse(t, designConfig)
	if got, want := cfg.Listen, (ListenConfig{GRPC: "127.0.0.1:9191", HTTP: "127.0.0.1:9192", Admin: "127.0.0.1:9090", ShutdownTimeout: Duration(defaultShutdown)}); got != want {
		t.Errorf("listen = %+v, want %+v", got, want)
	}
	if len(cfg.Issuers) != 1 {
		t.Fatalf("issuers = %+v", cfg.Issuers)
	}
	is := cfg.Issuers[0]
	if is.Issuer != "https://login.example.com/" || is.JWKSURI != "https://login.example.com/jwks" || is.Discovery ||
		!slices.Equal(is.Audiences, []string{"orders-api"}) || !slices.Equal(is.Algorithms, []string{"RS256", "ES256"}) {
		t.Errorf("issuers[0] = %+v", is)
	}
	if !*cfg.Tokens.Bearer || !slices.Equal(cfg.Tokens.Cookies, []string{"ll_session_token"}) || cfg.Tokens.Leeway.D() != 30*time.Second {
		t.Errorf("tokens = %+v", cfg.Tokens)
	}
	if len(cfg.Forward.Claims) != 1 || cfg.Forward.Claims["x-user-id"] != "sub" || *cfg.Forward.PayloadHeader != "x-jwt-payload" {
		t.Errorf("forward = %+v (payload_header %q)", cfg.Forward.Claims, *cfg.Forward.PayloadHeader)
	}
	if n := cfg.Revocation.NATS; n.URL != "nats://127.0.0.1:4222" || n.Subject != "sidegate.revocations" || n.Stream != "SIDEGATE_REVOCATIONS" {
		t.Errorf("revocation.nats = %+v", n)
	}
	// The views handed to the other packages.
	ec := cfg.engineConfig()
	if !ec.Bearer || !slices.Equal(ec.Cookies, []string{"ll_session_token"}) || ec.PayloadHeader != "x-jwt-payload" ||
		len(ec.ForwardClaims) != 1 || ec.ForwardClaims[0].Header != "x-user-id" || ec.ForwardClaims[0].Claim != "sub" ||
		len(ec.Issuers) != 1 || ec.Issuers[0].Issuer != is.Issuer {
		t.Errorf("engineConfig = %+v", ec)
	}
	if ji := cfg.jwksIssuers(); len(ji) != 1 || ji[0].Issuer != is.Issuer || ji[0].JWKSURI != is.JWKSURI || ji[0].Discovery {
		t.Errorf("jwksIssuers = %+v", ji)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg := mustParse(t, minimalConfig)
	if got, want := cfg.Listen, (ListenConfig{GRPC: "127.0.0.1:9191", HTTP: "127.0.0.1:9192", Admin: "127.0.0.1:9090", ShutdownTimeout: Duration(15 * time.Second)}); got != want {
		t.Errorf("listen = %+v, want %+v", got, want)
	}
	if got := cfg.Issuers[0].Algorithms; !slices.Equal(got, []string{"RS256", "ES256", "EdDSA"}) {
		t.Errorf("issuers[0].algorithms = %v, want [RS256 ES256 EdDSA]", got)
	}
	if cfg.Tokens.Bearer == nil || !*cfg.Tokens.Bearer {
		t.Errorf("tokens.bearer = %v, want true", cfg.Tokens.Bearer)
	}
	if len(cfg.Tokens.Cookies) != 0 {
		t.Errorf("tokens.cookies = %v, want none", cfg.Tokens.Cookies)
	}
	if got := cfg.Tokens.Leeway.D(); got != 30*time.Second {
		t.Errorf("tokens.leeway = %v, want 30s", got)
	}
	if got := cfg.Tokens.MaxSize; got != 8192 {
		t.Errorf("tokens.max_size = %d, want 8192", got)
	}
	if got := cfg.Tokens.MaxLifetime.D(); got != 24*time.Hour {
		t.Errorf("tokens.max_lifetime = %v, want 24h", got)
	}
	if got := *cfg.Forward.PayloadHeader; got != "x-jwt-payload" {
		t.Errorf("forward.payload_header = %q, want x-jwt-payload", got)
	}
	if got := cfg.Forward.Claims; len(got) != 1 || got["x-user-id"] != "sub" {
		t.Errorf("forward.claims = %v, want {x-user-id: sub}", got)
	}
	if got := cfg.JWKS.RefreshInterval.D(); got != 5*time.Minute {
		t.Errorf("jwks.refresh_interval = %v, want 5m", got)
	}
	if got := cfg.JWKS.Timeout.D(); got != 10*time.Second {
		t.Errorf("jwks.timeout = %v, want 10s", got)
	}
	if s := cfg.Summary(); s != "ok: 1 issuer(s); tokens from bearer; 2 identity header(s); grpc 127.0.0.1:9191, http 127.0.0.1:9192, admin 127.0.0.1:9090" {
		t.Errorf("Summary() = %q", s)
	}
}

func TestParseConfigExplicitValuesOverrideDefaults(t *testing.T) {
	cfg := mustParse(t, minimalConfig+`
listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", admin: "127.0.0.1:0", shutdown_timeout: 2s}
tokens:
  bearer: false
  cookies: [a, b]
  leeway: 0s
  max_size: 4096
  max_lifetime: 1h30m
jwks: {refresh_interval: 90s, timeout: 3s}
`)
	if cfg.Listen.GRPC != "127.0.0.1:0" || cfg.Listen.ShutdownTimeout.D() != 2*time.Second {
		t.Errorf("listen = %+v", cfg.Listen)
	}
	// bearer: false is kept (it is not the zero value that means "unset").
	if *cfg.Tokens.Bearer {
		t.Error("tokens.bearer: false was overridden")
	}
	// leeway: 0s (no clock skew at all) is a setting, not "unset".
	if got := cfg.Tokens.Leeway.D(); got != 0 {
		t.Errorf("tokens.leeway: 0s gave %v", got)
	}
	if got := cfg.engineConfig().Leeway; got != 0 {
		t.Errorf("engine Leeway = %v, want 0", got)
	}
	if cfg.Tokens.MaxSize != 4096 || cfg.Tokens.MaxLifetime.D() != 90*time.Minute {
		t.Errorf("tokens = %+v", cfg.Tokens)
	}
	if cfg.JWKS.RefreshInterval.D() != 90*time.Second || cfg.JWKS.Timeout.D() != 3*time.Second {
		t.Errorf("jwks = %+v", cfg.JWKS)
	}
	if s := cfg.Summary(); !strings.Contains(s, "tokens from cookie a, cookie b;") {
		t.Errorf("Summary() = %q", s)
	}
}

func TestParseConfigForwardSwitches(t *testing.T) {
	t.Run("payload header off", func(t *testing.T) {
		cfg := mustParse(t, minimalConfig+`forward: {payload_header: ""}`)
		if got := *cfg.Forward.PayloadHeader; got != "" {
			t.Errorf("forward.payload_header = %q, want off", got)
		}
		if got := cfg.engineConfig().PayloadHeader; got != "" {
			t.Errorf("engine PayloadHeader = %q, want off", got)
		}
		// The claims default still applies.
		if got := cfg.Forward.Claims; got["x-user-id"] != "sub" {
			t.Errorf("forward.claims = %v", got)
		}
	})
	t.Run("no claim headers", func(t *testing.T) {
		cfg := mustParse(t, minimalConfig+`forward: {claims: {}}`)
		if len(cfg.Forward.Claims) != 0 {
			t.Errorf("forward.claims = %v, want none", cfg.Forward.Claims)
		}
		if got := cfg.engineConfig().ForwardClaims; len(got) != 0 {
			t.Errorf("engine ForwardClaims = %v, want none", got)
		}
		if got := *cfg.Forward.PayloadHeader; got != "x-jwt-payload" {
			t.Errorf("forward.payload_header = %q", got)
		}
	})
	t.Run("neither", func(t *testing.T) {
		cfg := mustParse(t, minimalConfig+`forward: {claims: {}, payload_header: ""}`)
		if len(cfg.Forward.Claims) != 0 || *cfg.Forward.PayloadHeader != "" {
			t.Errorf("forward = %+v", cfg.Forward)
		}
		if s := cfg.Summary(); !strings.Contains(s, "0 identity header(s)") {
			t.Errorf("Summary() = %q", s)
		}
	})
	t.Run("header names are lower-cased for the engine", func(t *testing.T) {
		cfg := mustParse(t, minimalConfig+`forward: {claims: {X-User-Id: sub, X-Groups: groups}, payload_header: X-JWT}`)
		ec := cfg.engineConfig()
		var got []string
		for _, f := range ec.ForwardClaims {
			got = append(got, f.Header+"="+f.Claim)
		}
		if want := []string{"x-groups=groups", "x-user-id=sub"}; !slices.Equal(got, want) {
			t.Errorf("ForwardClaims = %v, want %v", got, want)
		}
		if ec.PayloadHeader != "x-jwt" {
			t.Errorf("PayloadHeader = %q", ec.PayloadHeader)
		}
	})
}

func TestParseConfigUnknownKeys(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // each must be the start of one problem
	}{
		{"top level", minimalConfig + "issuer: x\n",
			[]string{`issuer: unknown key (line 6); did you mean "issuers"?`}},
		{"nested typo with plural suggestion", minimalConfig + "tokens:\n  cookie: [session]\n",
			[]string{`tokens.cookie: unknown key (line 7); did you mean "cookies"?`}},
		{"nested, no suggestion", minimalConfig + "listen:\n  metrics: 127.0.0.1:9\n",
			[]string{"listen.metrics: unknown key (line 7)"}},
		{"deeper", minimalConfig + "revocation:\n  nats:\n    urls: [nats://x]\n",
			[]string{`revocation.nats.urls: unknown key (line 8); did you mean "url"?`}},
		{"inside the second issuer", `
issuers:
  - issuer: https://a.example/
    jwks_uri: https://a.example/jwks
    audiences: [a]
  - issuer: https://b.example/
    jwks-uri: https://b.example/jwks
    audience: [b]
`, []string{
			`issuers[1].jwks-uri: unknown key (line 7); did you mean "jwks_uri"?`,
			`issuers[1].audience: unknown key (line 8); did you mean "audiences"?`,
			// and what the misspelt keys leave unset
			"issuers[1].jwks_uri: must be set (or discovery: true)",
			"issuers[1].audiences: must not be empty",
		}},
		{"case", minimalConfig + "Tokens: {}\n",
			[]string{`Tokens: unknown key (line 6); did you mean "tokens"?`}},
		{"several at once", minimalConfig + "foo: 1\ntokens: {bar: 2}\nforward: {baz: 3}\n",
			[]string{"foo: unknown key", "tokens.bar: unknown key", "forward.baz: unknown key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := configProblems(t, tt.yaml)
			assertProblems(t, p, tt.want)
		})
	}
}

// Claim names are free-form map keys: they are not "unknown keys".
func TestParseConfigClaimMapKeysAreFree(t *testing.T) {
	cfg := mustParse(t, minimalConfig+"forward:\n  claims:\n    x-tenant: https://example.com/tenant\n    x-email: email\n")
	if len(cfg.Forward.Claims) != 2 {
		t.Errorf("forward.claims = %v", cfg.Forward.Claims)
	}
}

// An unknown key does not hide the other problems of the file: check-config
// promises every problem at once.
func TestParseConfigUnknownKeysAndValidationTogether(t *testing.T) {
	p := configProblems(t, `
tokens:
  cookie: [session]
issuers:
  - issuer: https://a.example/
    jwks_uri: https://a.example/jwks
`)
	assertProblems(t, p, []string{
		`tokens.cookie: unknown key (line 3); did you mean "cookies"?`,
		"issuers[0].audiences: must not be empty",
	})
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p := configProblems(t, `
listen:
  grpc: 127.0.0.1:7000
  http: 127.0.0.1:7000
  admin: nowhere
issuers:
  - issuer: https://a.example/
    jwks_uri: https://a.example/jwks
  - issuer: https://b.example/
    jwks_uri: https://b.example/jwks
    discovery: true
    audiences: []
    algorithms: [RS256, none, HS256, XS999]
  - issuer: https://a.example/
    jwks_uri: ftp://a.example/jwks
    audiences: [a, ""]
    algorithms: []
tokens:
  cookies: ["bad cookie", session, session]
  leeway: 10m
  max_size: 10
  max_lifetime: -1h
forward:
  claims:
    authorization: sub
    Host: sub
    x-user-id: sub
    X-User-Id: email
    x-empty: ""
  payload_header: X-USER-ID
jwks:
  refresh_interval: 10ms
revocation:
  nats:
    url: http://nats.example:4222
`)
	want := []string{
		`listen.http: "127.0.0.1:7000" is also listen.grpc`,
		`listen.admin: "nowhere" is not host:port`,
		"issuers[0].audiences: must not be empty",
		"issuers[1]: set either jwks_uri or discovery: true, not both",
		"issuers[1].audiences: must not be empty",
		"issuers[1].algorithms[1]: none is never accepted",
		"issuers[1].algorithms[2]: HS256 is symmetric",
		`issuers[1].algorithms[3]: "XS999" is not supported`,
		`issuers[2].issuer: "https://a.example/" is also issuers[0]`,
		`issuers[2].jwks_uri: "ftp://a.example/jwks" is not an http(s) URL`,
		"issuers[2].audiences[1]: must not be empty",
		"issuers[2].algorithms: must not be empty",
		`tokens.cookies[0]: "bad cookie" is not a valid cookie name`,
		`tokens.cookies[2]: "session" is listed twice`,
		"tokens.leeway: must be between 0 and 5m",
		"tokens.max_size: must be between 256 and 65536 bytes",
		"tokens.max_lifetime: must be positive",
		`forward.claims.Host: "Host" cannot be an identity header`,
		`forward.claims.authorization: "authorization" cannot be an identity header`,
		"forward.claims.x-empty: must name a claim",
		"forward.claims.x-user-id: same header as forward.claims.X-User-Id",
		"forward.payload_header: same header as forward.claims.x-user-id",
		"jwks.refresh_interval: must be at least 1s",
		`revocation.nats.url: "http://nats.example:4222" is not a nats:// URL`,
	}
	assertProblems(t, p, want)

	// The error text carries every problem, so a caller printing only
	// err.Error() still sees them all.
	msg := p.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error text lacks %q", w)
		}
	}
}

func TestValidateNoTokenSource(t *testing.T) {
	p := configProblems(t, minimalConfig+"tokens: {bearer: false}\n")
	assertProblems(t, p, []string{"tokens: no token source: enable bearer or name at least one cookie"})
}

func TestValidateIssuers(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"none", "tokens: {bearer: true}\n", []string{"issuers: at least one issuer is required"}},
		{"empty list", "issuers: []\n", []string{"issuers: at least one issuer is required"}},
		{"duplicate", `
issuers:
  - {issuer: "https://a.example/", jwks_uri: "https://a.example/jwks", audiences: [a]}
  - {issuer: "https://a.example/", jwks_uri: "https://a.example/other", audiences: [b]}
`, []string{`issuers[1].issuer: "https://a.example/" is also issuers[0]`}},
		{"no issuer, no keys", `
issuers:
  - audiences: [a]
`, []string{"issuers[0].issuer: must not be empty", "issuers[0].jwks_uri: must be set (or discovery: true)"}},
		{"discovery needs an http issuer", `
issuers:
  - {issuer: "login.example", discovery: true, audiences: [a]}
`, []string{`issuers[0].issuer: discovery needs the issuer to be an http(s) URL`}},
		{"algorithm names are exact", `
issuers:
  - {issuer: "https://a.example/", jwks_uri: "https://a.example/jwks", audiences: [a], algorithms: [rs256, NONE, hs512]}
`, []string{
			`issuers[0].algorithms[0]: "rs256" is not supported`,
			"issuers[0].algorithms[1]: none is never accepted",
			"issuers[0].algorithms[2]: hs512 is symmetric",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertProblems(t, configProblems(t, tt.yaml), tt.want)
		})
	}
	// Discovery alone is valid.
	cfg := mustParse(t, `
issuers:
  - {issuer: "https://a.example/", discovery: true, audiences: [a], algorithms: [PS256, ES384, EdDSA]}
`)
	if !cfg.jwksIssuers()[0].Discovery {
		t.Error("discovery lost")
	}
}

func TestValidateIdentityHeaders(t *testing.T) {
	for _, h := range []string{"authorization", "Host", "cookie", "content-length", "Proxy-Authorization", "x-envoy-auth-headers-to-remove"} {
		t.Run(h, func(t *testing.T) {
			p := configProblems(t, minimalConfig+"forward: {claims: {"+h+": sub}}\n")
			assertProblems(t, p, []string{"forward.claims." + h + `: "` + h + `" cannot be an identity header`})
			p = configProblems(t, minimalConfig+"forward: {payload_header: "+h+"}\n")
			assertProblems(t, p, []string{"forward.payload_header: " + `"` + h + `" cannot be an identity header`})
		})
	}
	p := configProblems(t, minimalConfig+"forward: {claims: {\"x user\": sub}}\n")
	assertProblems(t, p, []string{`forward.claims.x user: "x user" is not a valid header name`})
}

func TestParseConfigBadDurations(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"words", "5 minutes", `line 7: "5 minutes" is not a duration (use forms such as 30s, 5m or 1h)`},
		{"bare number", "30", `line 7: "30" is not a duration (use forms such as 30s, 5m or 1h)`},
		{"list", "[30s]", "line 7: want a duration such as 30s, 5m or 1h"},
		{"map", "{s: 30}", "line 7: want a duration such as 30s, 5m or 1h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := configProblems(t, minimalConfig+"tokens:\n  leeway: "+tt.value+"\n")
			assertProblems(t, p, []string{tt.want})
		})
	}
	// Every bad value is reported, not only the first.
	p := configProblems(t, minimalConfig+"tokens:\n  leeway: 5 minutes\n  max_size: big\njwks:\n  refresh_interval: often\n")
	assertProblems(t, p, []string{
		`line 7: "5 minutes" is not a duration`,
		"line 8: cannot unmarshal !!str `big` into int",
		`line 10: "often" is not a duration`,
	})
}

func TestParseConfigNotAConfig(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "config: the file is empty"},
		{"only a comment", "# nothing here\n", "config: the file is empty"},
		{"only whitespace", "\n  \n", "config: the file is empty"},
		{"null document", "~\n", "issuers: at least one issuer is required"},
		{"not yaml", "listen: [127.0.0.1\n", "config: yaml:"},
		{"tab indentation", "listen:\n\tgrpc: x\n", "config: yaml:"},
		{"list at top level", "- issuer: https://a.example/\n", "cannot unmarshal !!seq into main.Config"},
		{"scalar at top level", "just a string\n", "cannot unmarshal !!str `just a ...` into main.Config"},
		{"wrong shape below", "listen: [a, b]\n", "cannot unmarshal !!seq into main.ListenConfig"},
		{"issuers not a list", "issuers: https://a.example/\n", "into []main.IssuerConfig"},
		{"duplicate key", minimalConfig + "forward:\n  claims:\n    x-a: sub\n    x-a: email\n", `mapping key "x-a" already defined`},
		{"binary junk", "\x00\x01\x02\xff", "config:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	if _, err := LoadConfig(t.TempDir() + "/missing.yaml"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("LoadConfig(missing) = %v", err)
	}
	path := writeConfig(t, designConfig)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Issuers[0].Issuer != "https://login.example.com/" {
		t.Errorf("issuers = %+v", cfg.Issuers)
	}
}

// FuzzParseConfig: any input gives a configuration or an error, never a
// panic, and an accepted configuration is valid.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(designConfig))
	f.Add([]byte(minimalConfig))
	f.Add([]byte(""))
	f.Add([]byte("- a\n"))
	f.Add([]byte("tokens: {leeway: 5 minutes}"))
	f.Add([]byte("issuers: [{issuer: x, discovery: true, algorithms: [none]}]"))
	f.Add([]byte("forward: {claims: {}, payload_header: \"\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("ParseConfig = %v, %v", cfg, err)
		}
		if cfg != nil {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("accepted an invalid configuration: %v", err)
			}
			_ = cfg.Summary()
			_ = cfg.engineConfig()
		}
	})
}

// assertProblems checks that p has exactly len(want) entries and that each
// want is the start of one of them.
func assertProblems(t *testing.T, p problems, want []string) {
	t.Helper()
	missing := false
	for _, w := range want {
		if !slices.ContainsFunc(p, func(s string) bool { return strings.HasPrefix(s, w) }) {
			t.Errorf("missing problem %q", w)
			missing = true
		}
	}
	if missing || len(p) != len(want) {
		t.Errorf("got %d problem(s), want %d:\n  %s", len(p), len(want), strings.Join(p, "\n  "))
	}
}

// TestConfigListenPorts: ports that serve could not bind are refused by
// check-config too, all at once.
func TestConfigListenPorts(t *testing.T) {
	_, err := ParseConfig([]byte(`
listen: {grpc: "127.0.0.1:99999", http: "127.0.0.1:-5", admin: "127.0.0.1:abc"}
issuers: [{issuer: "https://i/", jwks_uri: "https://i/jwks", audiences: [a]}]
`))
	if err == nil {
		t.Fatal("ParseConfig accepted invalid ports")
	}
	for _, key := range []string{"listen.grpc: ", "listen.http: ", "listen.admin: "} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
}

// TestParseConfigRoutes: routes are validated with the rest of the file,
// every problem named by its route, unknown keys inside a route caught,
// and a covered route is a warning, not an error.
func TestParseConfigRoutes(t *testing.T) {
	const base = `
issuers:
  - issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks
    audiences: [orders-api]
`
	cfg := mustParse(t, base+`
routes:
  - name: health
    match: {paths: [/healthz], methods: [GET]}
    auth: none
  - name: admin
    match: {path_prefix: /admin/}
    require:
      scopes: [admin:write]
      claims: {realm_access.roles: [admin], email_verified: true}
  - name: admin-users
    match: {path_prefix: /admin/users/}
csrf: {trusted_origins: ["https://app.example.com"]}
policy: {mode: shadow}
`)
	if cfg.policy == nil || len(cfg.policy.RouteNames()) != 4 {
		t.Fatalf("policy %v", cfg.policy)
	}
	if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "admin-users") {
		t.Errorf("warnings %q, want one about admin-users, covered by admin", cfg.warnings)
	}
	if !strings.Contains(cfg.Summary(), "3 route(s)") {
		t.Errorf("summary %q", cfg.Summary())
	}

	p := configProblems(t, base+`
routes:
  - name: admin
    match: {path_prefix: /admin/}
    issuers: [https://other.example.com/]
    require: {claims: {"a..b": x}}
    mode: loud
  - name: empty
    auth: none
    mach: {paths: [/x]}
csrf: {trusted_origins: ["https://app.example.com/"], mode: maybe}
`)
	for _, want := range []string{
		"routes[1].mach: unknown key",
		`routes[0] (admin): issuers`,
		`routes[0] (admin)`,
		"a..b",
		"loud",
		"maybe",
		"https://app.example.com/",
	} {
		found := false
		for _, s := range p {
			if strings.Contains(s, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem mentions %q in:\n%s", want, strings.Join(p, "\n"))
		}
	}
}
