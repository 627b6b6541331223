package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sidegate/sidegate/authz"
	"github.com/sidegate/sidegate/jwks"
)

// Config is sidegate's whole configuration file.
type Config struct {
	Listen     ListenConfig     `yaml:"listen"`
	Issuers    []IssuerConfig   `yaml:"issuers"`
	Tokens     TokensConfig     `yaml:"tokens"`
	Forward    ForwardConfig    `yaml:"forward"`
	JWKS       JWKSConfig       `yaml:"jwks"`
	Revocation RevocationConfig `yaml:"revocation"`
	Metrics    MetricsConfig    `yaml:"metrics"`
	Cache      CacheConfig      `yaml:"cache"`
	Debug      DebugConfig      `yaml:"debug"`
	// Routes are matched in order, first match wins; DefaultRoute applies
	// when none matches (auth: required unless set).
	Routes       []authz.RouteConfig `yaml:"routes"`
	DefaultRoute authz.RouteConfig   `yaml:"default_route"`
	Policy       PolicyConfig        `yaml:"policy"`
	CSRF         authz.CSRFConfig    `yaml:"csrf"`
	Reload       ReloadConfig        `yaml:"reload"`

	// policy is the compiled routes, set by Validate; warnings are what
	// compiling them found suspicious (check-config prints them, serve
	// logs them).
	policy   *authz.Policy
	warnings []string
	// path and sum are the file it was loaded from and the SHA-256 of its
	// content, for live reload; empty when parsed from bytes.
	path string
	sum  [sha256.Size]byte
}

// PolicyConfig holds settings for every route.
type PolicyConfig struct {
	// Mode is enforce (the default) or shadow: decide fully, record what
	// would have happened, allow.
	Mode string `yaml:"mode"`
}

// ReloadConfig is live reload of the configuration file.
type ReloadConfig struct {
	// Interval is how often the file is checked for a change (a ConfigMap
	// update); 0s turns the watch off. SIGHUP reloads either way.
	Interval *Duration `yaml:"interval"`
}

// CacheConfig is the verified-token cache, on by default.
type CacheConfig struct {
	// Enabled is true unless set false: a repeated token is then verified
	// in full on every request.
	Enabled *bool `yaml:"enabled"`
	// MaxEntries bounds the verified tokens held (default 100,000).
	MaxEntries int `yaml:"max_entries"`
	// MaxTTL is the longest a token is trusted from the cache before it is
	// verified again (default 5m); its exp ends it sooner.
	MaxTTL Duration `yaml:"max_ttl"`
	// NegativeMaxEntries bounds the remembered failures of repeated
	// identical bad tokens (default 10,000).
	NegativeMaxEntries int `yaml:"negative_max_entries"`
	// NegativeTTL is how long such a failure is remembered (default 10s).
	NegativeTTL Duration `yaml:"negative_ttl"`
}

// DebugConfig holds what is off in production unless asked for.
type DebugConfig struct {
	// PProf serves net/http/pprof under /debug/pprof/ on the admin listener.
	PProf bool `yaml:"pprof"`
}

// MetricsConfig holds opt-in metrics.
type MetricsConfig struct {
	// Stages adds sidegate_check_stage_duration_seconds{stage}: extract,
	// verify and denylist timed on every check (a few clock reads each).
	Stages bool `yaml:"stages"`
}

// ListenConfig holds the three listeners.
type ListenConfig struct {
	GRPC  string `yaml:"grpc"`  // Envoy ext_authz v3
	HTTP  string `yaml:"http"`  // HTTP check, any path
	Admin string `yaml:"admin"` // /metrics, /healthz, /readyz
	// ShutdownDelay keeps serving, with readiness off, for this long after
	// SIGTERM before listeners close, so that endpoints and Envoy stop
	// sending new work first. ShutdownTimeout then bounds the drain of
	// in-flight checks.
	ShutdownDelay   Duration `yaml:"shutdown_delay"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// IssuerConfig is one trusted issuer.
type IssuerConfig struct {
	Issuer     string   `yaml:"issuer"`
	JWKSURI    string   `yaml:"jwks_uri"`
	Discovery  bool     `yaml:"discovery"`
	Audiences  []string `yaml:"audiences"`
	Algorithms []string `yaml:"algorithms"`
	TokenTypes []string `yaml:"token_types"`
	// Optional issuers do not hold back readiness while they have no keys.
	Optional bool `yaml:"optional"`
	// InsecureHTTP allows plain-http jwks_uri and discovery to hosts other
	// than loopback.
	InsecureHTTP bool `yaml:"insecure_http"`
}

// TokensConfig says where tokens come from and how strictly time is judged.
type TokensConfig struct {
	Bearer      *bool     `yaml:"bearer"`
	Cookies     []string  `yaml:"cookies"`
	Leeway      *Duration `yaml:"leeway"` // nil is the default; 0s (no skew) is a setting
	MaxSize     int       `yaml:"max_size"`
	MaxLifetime Duration  `yaml:"max_lifetime"`
	RequireIAT  bool      `yaml:"require_iat"` // refuse tokens without iat
}

// ForwardConfig says which identity headers the upstream receives.
type ForwardConfig struct {
	Claims        map[string]string `yaml:"claims"`
	PayloadHeader *string           `yaml:"payload_header"`
}

// JWKSConfig tunes key fetching for all issuers.
type JWKSConfig struct {
	RefreshInterval    Duration `yaml:"refresh_interval"`     // upper bound between fetches
	MinRefreshInterval Duration `yaml:"min_refresh_interval"` // lower bound; unknown-kid refetch rate limit
	KidWait            Duration `yaml:"kid_wait"`             // longest wait for an unknown-kid refetch
	MaxStale           Duration `yaml:"max_stale"`            // keys served this long after the last good fetch
	SnapshotDir        string   `yaml:"snapshot_dir"`         // last-known-good key sets on disk ("" off)
	Timeout            Duration `yaml:"timeout"`              // whole HTTP request
	ConnectTimeout     Duration `yaml:"connect_timeout"`
	MaxBodyBytes       int64    `yaml:"max_body_bytes"`
	MaxKeys            int      `yaml:"max_keys"`
	CAFile             string   `yaml:"ca_file"` // PEM trusted besides the system roots
}

// RevocationConfig is the revocation denylist and its NATS JetStream feed.
// Revocation is on when nats.url is set.
type RevocationConfig struct {
	Capacity          int          `yaml:"capacity"`            // expected entries; grows past it
	FalsePositiveRate float64      `yaml:"false_positive_rate"` // of the bloom filter (never a wrong denial)
	RebuildInterval   Duration     `yaml:"rebuild_interval"`    // expired entries dropped, filter rebuilt
	OnDisconnect      OnDisconnect `yaml:"on_disconnect"`       // serve, or {deny_after: 5m}
	NATS              NATSConfig   `yaml:"nats"`
}

// NATSConfig is how sidegate reaches the revocation stream.
type NATSConfig struct {
	URL             string   `yaml:"url"`
	Subject         string   `yaml:"subject"`
	Stream          string   `yaml:"stream"`
	CreateStream    bool     `yaml:"create_stream"`    // create the stream when absent
	MaxAge          Duration `yaml:"max_age"`          // of a created stream; at least tokens.max_lifetime
	CredentialsFile string   `yaml:"credentials_file"` // .creds (user JWT + NKey seed)
	NKeySeedFile    string   `yaml:"nkey_seed_file"`
	Token           string   `yaml:"token"`
	TokenFile       string   `yaml:"token_file"`
	User            string   `yaml:"user"`
	Password        string   `yaml:"password"`
	PasswordFile    string   `yaml:"password_file"`
	TLS             struct {
		CAFile   string `yaml:"ca_file"`
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
}

// OnDisconnect is revocation.on_disconnect: "serve" (keep enforcing the
// denylist held, alert through metrics) or {deny_after: D} (fail closed
// once NATS has been unreachable for D).
type OnDisconnect struct {
	DenyAfter Duration `yaml:"deny_after"`
}

// UnmarshalYAML accepts the scalar "serve" or a {deny_after: D} mapping.
func (o *OnDisconnect) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "serve" {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: on_disconnect is \"serve\" or {deny_after: DURATION}, not %q", n.Line, n.Value)}}
		}
		*o = OnDisconnect{}
		return nil
	}
	type plain OnDisconnect
	return n.Decode((*plain)(o))
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder carry on and report every bad
	// value at once; any other error would stop it at the first.
	var s string
	if n.Kind != yaml.ScalarNode || n.Decode(&s) != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a duration such as 30s, 5m or 1h", n.Line)}}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (use forms such as 30s, 5m or 1h)", n.Line, s)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults.
var (
	defaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}
	supportedAlgs     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

const (
	defaultGRPC        = "127.0.0.1:9191"
	defaultHTTP        = "127.0.0.1:9192"
	defaultAdmin       = "127.0.0.1:9090"
	defaultMaxSize     = 8 << 10
	defaultPayloadHdr  = "x-jwt-payload"
	defaultLeeway      = 30 * time.Second
	defaultMaxLifetime = 24 * time.Hour
	defaultRefresh     = 5 * time.Minute
	defaultJWKSTimeout = 10 * time.Second
	defaultShutdown    = 15 * time.Second
	// Kubernetes updates a mounted ConfigMap within about a minute; a
	// check every few seconds adds little to that and costs one small
	// file read.
	defaultReloadInterval = 5 * time.Second
)

// LoadConfig reads, defaults and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, err
	}
	cfg.path, cfg.sum = path, sha256.Sum256(data)
	return cfg, nil
}

// ParseConfig parses YAML, applies defaults and validates. Unknown keys,
// values of the wrong type and every validation problem are reported
// together in one error (a problems list, one entry per problem).
func ParseConfig(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("config: the file is empty")
	}
	var p problems
	checkKeys(root.Content[0], reflect.TypeFor[Config](), "", &p)
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// checkKeys has reported any unknown key with its path; the decoder
	// only backs it up, so that a typo is not reported twice.
	dec.KnownFields(len(p) == 0)
	if err := dec.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("config: %w", err)
		}
		// Values of the wrong type: report them all, but do not validate
		// a half-decoded configuration (its problems would be misleading).
		return nil, append(p, te.Errors...)
	}
	cfg.applyDefaults()
	var vp problems
	if err := cfg.Validate(); errors.As(err, &vp) {
		p = append(p, vp...)
	}
	if len(p) > 0 {
		return nil, p
	}
	return &cfg, nil
}

// checkKeys reports every mapping key that names no field, with its path,
// so that a typo such as "cookie:" is an error and not a silent default.
func checkKeys(n *yaml.Node, t reflect.Type, path string, p *problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				p.add(join(path, k.Value), "unknown key (line %d)%s", k.Line, suggest(t, k.Value))
				continue
			}
			checkKeys(v, f.Type, join(path, k.Value), p)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, el := range n.Content {
			checkKeys(el, t.Elem(), fmt.Sprintf("%s[%d]", path, i), p)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), p)
		}
	}
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest names a known key that differs from a typo by a plural or a
// case, the most common mistakes.
func suggest(t reflect.Type, name string) string {
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if strings.EqualFold(tag, name) || strings.EqualFold(tag, name+"s") || strings.EqualFold(tag+"s", name) || strings.EqualFold(strings.ReplaceAll(tag, "_", ""), strings.ReplaceAll(name, "-", "")) {
			return fmt.Sprintf("; did you mean %q?", tag)
		}
	}
	return ""
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *Config) applyDefaults() {
	setDefault(&c.Listen.GRPC, defaultGRPC)
	setDefault(&c.Listen.HTTP, defaultHTTP)
	setDefault(&c.Listen.Admin, defaultAdmin)
	setDefault(&c.Listen.ShutdownTimeout, Duration(defaultShutdown))
	if c.Reload.Interval == nil {
		iv := Duration(defaultReloadInterval)
		c.Reload.Interval = &iv
	}
	for i := range c.Issuers {
		if c.Issuers[i].Algorithms == nil {
			c.Issuers[i].Algorithms = slices.Clone(defaultAlgorithms)
		}
	}
	if c.Tokens.Bearer == nil {
		t := true
		c.Tokens.Bearer = &t
	}
	if c.Tokens.Leeway == nil {
		l := Duration(defaultLeeway)
		c.Tokens.Leeway = &l
	}
	setDefault(&c.Tokens.MaxSize, defaultMaxSize)
	setDefault(&c.Tokens.MaxLifetime, Duration(defaultMaxLifetime))
	if c.Forward.Claims == nil {
		c.Forward.Claims = map[string]string{"x-user-id": "sub"}
	}
	if c.Forward.PayloadHeader == nil {
		h := defaultPayloadHdr
		c.Forward.PayloadHeader = &h
	}
	setDefault(&c.JWKS.RefreshInterval, Duration(defaultRefresh))
	setDefault(&c.JWKS.MinRefreshInterval, Duration(min(time.Minute, c.JWKS.RefreshInterval.D())))
	setDefault(&c.JWKS.KidWait, Duration(500*time.Millisecond))
	setDefault(&c.JWKS.MaxStale, Duration(24*time.Hour))
	setDefault(&c.JWKS.Timeout, Duration(defaultJWKSTimeout))
	setDefault(&c.JWKS.ConnectTimeout, Duration(5*time.Second))
	setDefault(&c.JWKS.MaxBodyBytes, 1<<20)
	setDefault(&c.JWKS.MaxKeys, jwks.DefaultMaxKeys)
	r := &c.Revocation
	setDefault(&r.Capacity, 1_000_000)
	setDefault(&r.FalsePositiveRate, 0.001)
	setDefault(&r.RebuildInterval, Duration(time.Minute))
	setDefault(&r.NATS.Subject, "sidegate.revocations")
	setDefault(&r.NATS.Stream, "SIDEGATE_REVOCATIONS")
	setDefault(&r.NATS.MaxAge, max(Duration(48*time.Hour), c.Tokens.MaxLifetime))
	if c.Cache.Enabled == nil {
		on := true
		c.Cache.Enabled = &on
	}
	setDefault(&c.Cache.MaxEntries, 100_000)
	setDefault(&c.Cache.MaxTTL, Duration(5*time.Minute))
	setDefault(&c.Cache.NegativeMaxEntries, 10_000)
	setDefault(&c.Cache.NegativeTTL, Duration(10*time.Second))
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// problems collects validation errors, each naming its key.
type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

func (p problems) Error() string {
	return "config: " + strings.Join(p, "; ")
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p problems
	listeners := map[string]string{}
	for _, l := range []struct{ key, addr string }{
		{"listen.grpc", c.Listen.GRPC}, {"listen.http", c.Listen.HTTP}, {"listen.admin", c.Listen.Admin},
	} {
		if _, port, err := net.SplitHostPort(l.addr); err != nil || port == "" {
			p.add(l.key, "%q is not host:port", l.addr)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			p.add(l.key, "%q: the port must be a number from 0 to 65535", l.addr)
		} else if other, dup := listeners[l.addr]; dup && port != "0" {
			p.add(l.key, "%q is also %s", l.addr, other)
		}
		listeners[l.addr] = l.key
	}
	if c.Listen.ShutdownTimeout < 0 {
		p.add("listen.shutdown_timeout", "must not be negative")
	}
	if c.Listen.ShutdownDelay < 0 || c.Listen.ShutdownDelay.D() > 5*time.Minute {
		p.add("listen.shutdown_delay", "must be between 0 and 5m")
	}
	if len(c.Issuers) == 0 {
		p.add("issuers", "at least one issuer is required")
	}
	seen := map[string]int{}
	for i, is := range c.Issuers {
		key := fmt.Sprintf("issuers[%d]", i)
		switch {
		case is.Issuer == "":
			p.add(key+".issuer", "must not be empty")
		case seen[is.Issuer] > 0:
			p.add(key+".issuer", "%q is also issuers[%d]", is.Issuer, seen[is.Issuer]-1)
		}
		seen[is.Issuer] = i + 1
		switch {
		case is.Discovery && is.JWKSURI != "":
			p.add(key, "set either jwks_uri or discovery: true, not both")
		case is.Discovery:
			if err := jwks.CheckURL(is.Issuer, is.InsecureHTTP); err != nil {
				p.add(key+".issuer", "discovery needs the issuer to be an http(s) URL: %v", err)
			}
		case is.JWKSURI == "":
			p.add(key+".jwks_uri", "must be set (or discovery: true)")
		default:
			if err := jwks.CheckURL(is.JWKSURI, is.InsecureHTTP); err != nil {
				p.add(key+".jwks_uri", "%v", err)
			}
		}
		if len(is.Audiences) == 0 {
			p.add(key+".audiences", "must not be empty")
		}
		for j, a := range is.Audiences {
			if a == "" {
				p.add(fmt.Sprintf("%s.audiences[%d]", key, j), "must not be empty")
			}
		}
		for j, ty := range is.TokenTypes {
			if ty == "" || strings.ContainsAny(ty, " \t,") {
				p.add(fmt.Sprintf("%s.token_types[%d]", key, j), "%q is not a media type such as at+jwt", ty)
			}
		}
		if len(is.Algorithms) == 0 {
			p.add(key+".algorithms", "must not be empty")
		}
		for j, a := range is.Algorithms {
			k := fmt.Sprintf("%s.algorithms[%d]", key, j)
			switch {
			case strings.EqualFold(a, "none"):
				p.add(k, "none is never accepted")
			case strings.HasPrefix(strings.ToUpper(a), "HS"):
				p.add(k, "%s is symmetric: a verifier holding the secret could mint tokens; use an asymmetric algorithm", a)
			case !slices.Contains(supportedAlgs, a):
				p.add(k, "%q is not supported (one of %s)", a, strings.Join(supportedAlgs, ", "))
			}
		}
	}
	if !*c.Tokens.Bearer && len(c.Tokens.Cookies) == 0 {
		p.add("tokens", "no token source: enable bearer or name at least one cookie")
	}
	for i, name := range c.Tokens.Cookies {
		if !isToken(name) {
			p.add(fmt.Sprintf("tokens.cookies[%d]", i), "%q is not a valid cookie name", name)
		}
		if slices.Index(c.Tokens.Cookies, name) != i {
			p.add(fmt.Sprintf("tokens.cookies[%d]", i), "%q is listed twice", name)
		}
	}
	if l := c.Tokens.Leeway.D(); l < 0 || l > 5*time.Minute {
		p.add("tokens.leeway", "must be between 0 and 5m")
	}
	if c.Cache.MaxEntries < 0 || c.Cache.MaxEntries > 10_000_000 {
		p.add("cache.max_entries", "must be between 1 and 10000000 (cache.enabled: false turns the cache off)")
	}
	if c.Cache.NegativeMaxEntries < 0 || c.Cache.NegativeMaxEntries > 1_000_000 {
		p.add("cache.negative_max_entries", "must be between 1 and 1000000")
	}
	if c.Cache.MaxTTL < 0 {
		p.add("cache.max_ttl", "must not be negative")
	}
	if c.Cache.NegativeTTL < 0 || c.Cache.NegativeTTL.D() > 5*time.Minute {
		p.add("cache.negative_ttl", "must be between 0 and 5m")
	}
	if c.Tokens.MaxSize < 256 || c.Tokens.MaxSize > 64<<10 {
		p.add("tokens.max_size", "must be between 256 and 65536 bytes")
	}
	if c.Tokens.MaxLifetime <= 0 {
		p.add("tokens.max_lifetime", "must be positive")
	}
	headers := map[string]string{}
	for _, h := range sortedKeys(c.Forward.Claims) {
		key := "forward.claims." + h
		if err := checkIdentityHeader(h); err != nil {
			p.add(key, "%v", err)
		}
		if c.Forward.Claims[h] == "" {
			p.add(key, "must name a claim")
		}
		if other, dup := headers[strings.ToLower(h)]; dup {
			p.add(key, "same header as forward.claims.%s", other)
		}
		headers[strings.ToLower(h)] = h
	}
	if ph := *c.Forward.PayloadHeader; ph != "" {
		if err := checkIdentityHeader(ph); err != nil {
			p.add("forward.payload_header", "%v", err)
		}
		if other, dup := headers[strings.ToLower(ph)]; dup {
			p.add("forward.payload_header", "same header as forward.claims.%s", other)
		}
	}
	if c.JWKS.RefreshInterval.D() < time.Second {
		p.add("jwks.refresh_interval", "must be at least 1s")
	}
	if c.JWKS.MinRefreshInterval < 0 || c.JWKS.MinRefreshInterval > c.JWKS.RefreshInterval {
		p.add("jwks.min_refresh_interval", "must be between 0 and jwks.refresh_interval (%s)", c.JWKS.RefreshInterval.D())
	}
	if c.JWKS.KidWait < 0 || c.JWKS.KidWait.D() > 10*time.Second {
		p.add("jwks.kid_wait", "must be between 0 and 10s")
	}
	if c.JWKS.MaxStale < c.JWKS.RefreshInterval {
		p.add("jwks.max_stale", "must be at least jwks.refresh_interval (%s)", c.JWKS.RefreshInterval.D())
	}
	if c.JWKS.Timeout <= 0 {
		p.add("jwks.timeout", "must be positive")
	}
	if c.JWKS.ConnectTimeout <= 0 {
		p.add("jwks.connect_timeout", "must be positive")
	}
	if c.JWKS.MaxBodyBytes < 1024 || c.JWKS.MaxBodyBytes > 64<<20 {
		p.add("jwks.max_body_bytes", "must be between 1024 and 67108864")
	}
	if c.JWKS.MaxKeys < 1 || c.JWKS.MaxKeys > 10000 {
		p.add("jwks.max_keys", "must be between 1 and 10000")
	}
	if d := c.JWKS.SnapshotDir; d != "" {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			p.add("jwks.snapshot_dir", "%q is not a directory", d)
		}
	}
	if f := c.JWKS.CAFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			p.add("jwks.ca_file", "%v", err)
		}
	}
	c.validateRevocation(&p)
	if iv := c.Reload.Interval; iv != nil && iv.D() < 0 {
		p.add("reload.interval", "must not be negative")
	}
	c.compilePolicy(&p)
	if len(p) > 0 {
		return p
	}
	return nil
}

// compilePolicy compiles routes, default_route, policy and csrf, reporting
// each problem with the route it is about.
func (c *Config) compilePolicy(p *problems) {
	var names []string
	for _, is := range c.Issuers {
		names = append(names, is.Issuer)
	}
	pol, warnings, err := authz.CompilePolicy(authz.PolicyConfig{
		Routes: c.Routes, Default: c.DefaultRoute, Mode: c.Policy.Mode, CSRF: c.CSRF,
	}, names)
	if err != nil {
		for _, e := range unjoin(err) {
			*p = append(*p, e.Error())
		}
		return
	}
	c.policy, c.warnings = pol, warnings
}

// unjoin lists the errors of an errors.Join, or err itself.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Headers that must never be set from a claim: they change how the request
// is routed or framed, or carry credentials.
var reservedHeaders = []string{"host", "authorization", "cookie", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade", "keep-alive", "proxy-authorization", "x-envoy-auth-headers-to-remove"}

func (c *Config) validateRevocation(p *problems) {
	r := &c.Revocation
	if r.NATS.URL == "" {
		return
	}
	for _, u := range strings.Split(r.NATS.URL, ",") {
		if parsed, err := url.Parse(strings.TrimSpace(u)); err != nil || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, parsed.Scheme) || parsed.Host == "" {
			p.add("revocation.nats.url", "%q is not a nats:// URL", u)
		}
	}
	if strings.ContainsAny(r.NATS.Subject, " \t*>") || r.NATS.Subject == "" {
		p.add("revocation.nats.subject", "%q is not a literal NATS subject", r.NATS.Subject)
	}
	if r.NATS.Stream == "" || strings.ContainsAny(r.NATS.Stream, " \t.*>/\\") {
		p.add("revocation.nats.stream", "%q is not a valid stream name", r.NATS.Stream)
	}
	if r.NATS.CreateStream && r.NATS.MaxAge < c.Tokens.MaxLifetime {
		p.add("revocation.nats.max_age", "%s is shorter than tokens.max_lifetime (%s): revocations would be forgotten while their tokens still live", r.NATS.MaxAge.D(), c.Tokens.MaxLifetime.D())
	}
	if r.NATS.Token != "" && r.NATS.TokenFile != "" {
		p.add("revocation.nats.token", "set token or token_file, not both")
	}
	if r.NATS.Password != "" && r.NATS.PasswordFile != "" {
		p.add("revocation.nats.password", "set password or password_file, not both")
	}
	if (r.NATS.TLS.CertFile == "") != (r.NATS.TLS.KeyFile == "") {
		p.add("revocation.nats.tls", "cert_file and key_file go together")
	}
	for key, f := range map[string]string{
		"credentials_file": r.NATS.CredentialsFile, "nkey_seed_file": r.NATS.NKeySeedFile,
		"token_file": r.NATS.TokenFile, "password_file": r.NATS.PasswordFile,
		"tls.ca_file": r.NATS.TLS.CAFile, "tls.cert_file": r.NATS.TLS.CertFile, "tls.key_file": r.NATS.TLS.KeyFile,
	} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			p.add("revocation.nats."+key, "%v", err)
		}
	}
	if r.Capacity < 1 || r.Capacity > 100_000_000 {
		p.add("revocation.capacity", "must be between 1 and 100000000")
	}
	if !(r.FalsePositiveRate > 0 && r.FalsePositiveRate < 0.5) {
		p.add("revocation.false_positive_rate", "must be above 0 and below 0.5")
	}
	if r.RebuildInterval.D() < time.Second {
		p.add("revocation.rebuild_interval", "must be at least 1s")
	}
	if r.OnDisconnect.DenyAfter < 0 {
		p.add("revocation.on_disconnect.deny_after", "must not be negative")
	}
}

func checkIdentityHeader(h string) error {
	if !isToken(h) {
		return fmt.Errorf("%q is not a valid header name", h)
	}
	if slices.Contains(reservedHeaders, strings.ToLower(h)) {
		return fmt.Errorf("%q cannot be an identity header", h)
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token (header and cookie names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7F || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// engineConfig is the authz view of the configuration.
func (c *Config) engineConfig() authz.Config {
	ec := authz.Config{
		Bearer:          *c.Tokens.Bearer,
		Cookies:         c.Tokens.Cookies,
		Leeway:          c.Tokens.Leeway.D(),
		MaxSize:         c.Tokens.MaxSize,
		MaxLifetime:     c.Tokens.MaxLifetime.D(),
		RequireIssuedAt: c.Tokens.RequireIAT,
		PayloadHeader:   strings.ToLower(*c.Forward.PayloadHeader),
	}
	if *c.Cache.Enabled {
		ec.Cache = authz.CacheConfig{
			MaxEntries: c.Cache.MaxEntries, MaxTTL: c.Cache.MaxTTL.D(),
			NegativeEntries: c.Cache.NegativeMaxEntries, NegativeTTL: c.Cache.NegativeTTL.D(),
		}
	}
	for _, is := range c.Issuers {
		ec.Issuers = append(ec.Issuers, authz.Issuer{Issuer: is.Issuer, Audiences: is.Audiences, Algorithms: is.Algorithms, TokenTypes: is.TokenTypes})
	}
	for _, h := range sortedKeys(c.Forward.Claims) {
		ec.ForwardClaims = append(ec.ForwardClaims, authz.ForwardClaim{Header: strings.ToLower(h), Claim: c.Forward.Claims[h]})
	}
	ec.Policy = c.policy
	return ec
}

// jwksOptions is the jwks view of the configuration (without the logger
// and registerer, which the daemon adds).
func (c *Config) jwksOptions() jwks.Options {
	j := c.JWKS
	return jwks.Options{
		RefreshInterval:    j.RefreshInterval.D(),
		MinRefreshInterval: j.MinRefreshInterval.D(),
		KidWait:            j.KidWait.D(),
		MaxStale:           j.MaxStale.D(),
		SnapshotDir:        j.SnapshotDir,
		Timeout:            j.Timeout.D(),
		ConnectTimeout:     j.ConnectTimeout.D(),
		MaxBodyBytes:       j.MaxBodyBytes,
		MaxKeys:            j.MaxKeys,
		CAFile:             j.CAFile,
	}
}

// jwksIssuers is the jwks view of the configuration.
func (c *Config) jwksIssuers() []jwks.IssuerConfig {
	out := make([]jwks.IssuerConfig, 0, len(c.Issuers))
	for _, is := range c.Issuers {
		out = append(out, jwks.IssuerConfig{Issuer: is.Issuer, JWKSURI: is.JWKSURI, Discovery: is.Discovery, Optional: is.Optional, InsecureHTTP: is.InsecureHTTP})
	}
	return out
}

// Summary is the one-line description check-config prints.
func (c *Config) Summary() string {
	var src []string
	if *c.Tokens.Bearer {
		src = append(src, "bearer")
	}
	for _, ck := range c.Tokens.Cookies {
		src = append(src, "cookie "+ck)
	}
	routes := ""
	if len(c.Routes) > 0 {
		routes = fmt.Sprintf("; %d route(s)", len(c.Routes))
	}
	return fmt.Sprintf("ok: %d issuer(s); tokens from %s; %d identity header(s)%s; grpc %s, http %s, admin %s",
		len(c.Issuers), strings.Join(src, ", "), len(c.Forward.Claims)+boolInt(*c.Forward.PayloadHeader != ""),
		routes, c.Listen.GRPC, c.Listen.HTTP, c.Listen.Admin)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
