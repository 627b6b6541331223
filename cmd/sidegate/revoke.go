package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sidegate/sidegate/revocation"
)

// revokeFlags are sidegate revoke's flags.
type revokeFlags struct {
	configPath, url, subject, stream       string
	jti, exp, sub, before, kid, iss, token string
	creds, nkey, natsToken, user, password string
	caFile, certFile, keyFile              string
	timeout                                time.Duration
}

func cmdRevoke(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f revokeFlags
	fs.StringVar(&f.configPath, "config", "", "take the NATS settings from this sidegate configuration (flags override)")
	fs.StringVar(&f.url, "nats", "", "NATS URL, e.g. nats://127.0.0.1:4222")
	fs.StringVar(&f.subject, "subject", "", "NATS subject (default sidegate.revocations)")
	fs.StringVar(&f.stream, "stream", "", "JetStream stream (default SIDEGATE_REVOCATIONS)")
	fs.StringVar(&f.jti, "jti", "", "revoke the token with this jti")
	fs.StringVar(&f.exp, "exp", "", "with --jti: the token's expiry (unix seconds or RFC 3339), so the entry can go when the token dies")
	fs.StringVar(&f.sub, "sub", "", "revoke every token of this subject issued before --before")
	fs.StringVar(&f.before, "before", "", "with --sub: the cutoff (unix seconds or RFC 3339; default now)")
	fs.StringVar(&f.kid, "kid", "", "revoke every token signed by this key")
	fs.StringVar(&f.iss, "iss", "", "the issuer (required, except with --token)")
	fs.StringVar(&f.token, "token", "", "revoke this token: iss, jti and exp are read from it (nothing else in it is trusted)")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&f.nkey, "nkey", "", "NATS NKey seed file")
	fs.StringVar(&f.natsToken, "nats-token", "", "NATS token")
	fs.StringVar(&f.user, "user", "", "NATS user")
	fs.StringVar(&f.password, "password", "", "NATS password")
	fs.StringVar(&f.caFile, "tls-ca", "", "CA file for NATS TLS")
	fs.StringVar(&f.certFile, "tls-cert", "", "client certificate for NATS TLS")
	fs.StringVar(&f.keyFile, "tls-key", "", "client key for NATS TLS")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ev, err := f.event(time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "sidegate revoke:", err)
		return 2
	}
	cfg, err := f.config()
	if err != nil {
		fmt.Fprintln(stderr, "sidegate revoke:", err)
		return 2
	}
	if f.configPath != "" && !slices.ContainsFunc(cfg.Issuers, func(is IssuerConfig) bool { return is.Issuer == ev.Iss }) {
		fmt.Fprintf(stderr, "sidegate revoke: %q is not an issuer of %s: the revocation would match no token (iss is compared exactly)\n", ev.Iss, f.configPath)
		return 2
	}
	opts, err := cfg.natsOptions("sidegate revoke")
	if err != nil {
		fmt.Fprintln(stderr, "sidegate revoke:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	seq, err := publishRevocation(ctx, opts, ev)
	if err != nil {
		fmt.Fprintln(stderr, "sidegate revoke:", err)
		return 1
	}
	fmt.Fprintf(stdout, "revoked %s %q of %s: stream %s sequence %d\n", ev.Kind, ev.Value, ev.Iss, opts.Stream, seq)
	return 0
}

// event builds the revocation event the flags describe.
func (f *revokeFlags) event(now time.Time) (revocation.Event, error) {
	chosen := 0
	for _, v := range []string{f.jti, f.sub, f.kid, f.token} {
		if v != "" {
			chosen++
		}
	}
	if chosen != 1 {
		return revocation.Event{}, errors.New("give exactly one of --jti, --sub, --kid or --token")
	}
	ev := revocation.Event{Iss: f.iss}
	var err error
	switch {
	case f.token != "":
		if ev, err = eventFromToken(f.token); err != nil {
			return ev, err
		}
		if f.iss != "" && f.iss != ev.Iss {
			return ev, fmt.Errorf("--iss %q differs from the token's iss %q", f.iss, ev.Iss)
		}
	case f.jti != "":
		ev.Kind, ev.Value = revocation.KindJTI, f.jti
		if f.exp != "" {
			if ev.Exp, err = parseWhen(f.exp); err != nil {
				return ev, fmt.Errorf("--exp: %w", err)
			}
		}
	case f.sub != "":
		ev.Kind, ev.Value, ev.IssuedBefore = revocation.KindSub, f.sub, now.Unix()+1
		if f.before != "" {
			if ev.IssuedBefore, err = parseWhen(f.before); err != nil {
				return ev, fmt.Errorf("--before: %w", err)
			}
		}
	case f.kid != "":
		ev.Kind, ev.Value = revocation.KindKid, f.kid
	}
	if f.exp != "" && ev.Kind != revocation.KindJTI || f.before != "" && ev.Kind != revocation.KindSub {
		return ev, errors.New("--exp goes with --jti or --token, --before with --sub")
	}
	if ev.Iss == "" {
		return ev, errors.New("--iss is required")
	}
	// The event must be one the server accepts: check it the same way.
	data, err := json.Marshal(ev)
	if err != nil {
		return ev, err
	}
	if _, err := revocation.ParseEvent(data); err != nil {
		return ev, err
	}
	return ev, nil
}

// eventFromToken reads iss, jti and exp from a token's payload. The token
// is not verified and nothing else in it is used: revoking a forged token
// only denies that forgery.
func eventFromToken(tok string) (revocation.Event, error) {
	parts := strings.Split(strings.TrimSpace(strings.TrimPrefix(tok, "Bearer ")), ".")
	if len(parts) != 3 {
		return revocation.Event{}, errors.New("--token: not a compact JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return revocation.Event{}, fmt.Errorf("--token: payload: %w", err)
	}
	// A map, not a struct: member names are matched exactly, as the
	// verifier matches them (encoding/json folds case for struct fields).
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		return revocation.Event{}, fmt.Errorf("--token: payload: %w", err)
	}
	iss, _ := c["iss"].(string)
	jti, _ := c["jti"].(string)
	if jti == "" || iss == "" {
		return revocation.Event{}, errors.New("--token: the token has no jti or no iss; revoke its subject with --sub instead")
	}
	ev := revocation.Event{Kind: revocation.KindJTI, Iss: iss, Value: jti}
	if exp, ok := c["exp"].(float64); ok && exp > 0 {
		ev.Exp = int64(exp) + 1
	}
	return ev, nil
}

// parseWhen reads unix seconds or an RFC 3339 time.
func parseWhen(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither unix seconds nor RFC 3339", s)
	}
	return t.Unix(), nil
}

// config is --config (if any) with the NATS flags applied over it.
func (f *revokeFlags) config() (*Config, error) {
	cfg := &Config{}
	if f.configPath != "" {
		loaded, err := LoadConfig(f.configPath)
		if err != nil {
			return nil, err
		}
		cfg = loaded
	} else {
		cfg.applyDefaults()
	}
	n := &cfg.Revocation.NATS
	for _, o := range []struct {
		dst *string
		v   string
	}{
		{&n.URL, f.url}, {&n.Subject, f.subject}, {&n.Stream, f.stream},
		{&n.CredentialsFile, f.creds}, {&n.NKeySeedFile, f.nkey}, {&n.Token, f.natsToken},
		{&n.User, f.user}, {&n.Password, f.password},
		{&n.TLS.CAFile, f.caFile}, {&n.TLS.CertFile, f.certFile}, {&n.TLS.KeyFile, f.keyFile},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if n.URL == "" {
		return nil, errors.New("--nats URL (or --config with revocation.nats.url) is required")
	}
	return cfg, nil
}

func publishRevocation(ctx context.Context, opts revocation.NATSOptions, ev revocation.Event) (uint64, error) {
	// A one-shot command: a NATS that cannot be reached is an error now,
	// not a reason to retry in the background.
	nc, err := revocation.Connect(opts, slog.New(slog.DiscardHandler), nats.RetryOnFailedConnect(false))
	if err != nil {
		return 0, fmt.Errorf("NATS at %s: %w", redactURL(opts.URL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	seq, err := revocation.Publish(ctx, js, opts.Subject, ev)
	if err != nil && !nc.IsConnected() {
		return 0, fmt.Errorf("NATS at %s is not reachable (%w)", redactURL(opts.URL), err)
	}
	return seq, err
}

// redactURL hides passwords and tokens in NATS URLs for messages.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
