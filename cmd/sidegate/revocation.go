package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidegate/sidegate/authz"
	"github.com/sidegate/sidegate/revocation"
)

// natsOptions turns revocation.nats into the revocation package's options,
// reading the secret files.
func (c *Config) natsOptions(name string) (revocation.NATSOptions, error) {
	n := c.Revocation.NATS
	o := revocation.NATSOptions{
		URL: n.URL, Subject: n.Subject, Stream: n.Stream,
		CreateStream: n.CreateStream, MaxAge: n.MaxAge.D(),
		CredentialsFile: n.CredentialsFile, NKeySeedFile: n.NKeySeedFile,
		Token: n.Token, User: n.User, Password: n.Password,
		CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile,
		Name: name,
	}
	var err error
	if n.TokenFile != "" {
		if o.Token, err = readSecret(n.TokenFile); err != nil {
			return o, fmt.Errorf("revocation.nats.token_file: %w", err)
		}
	}
	if n.PasswordFile != "" {
		if o.Password, err = readSecret(n.PasswordFile); err != nil {
			return o, fmt.Errorf("revocation.nats.password_file: %w", err)
		}
	}
	return o, nil
}

// readSecret reads a one-line secret file (a trailing newline is dropped).
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// denylist is the engine's view of revocation: the denylist, and the
// subscriber's verdict on whether it can still be trusted.
type denylist struct {
	list *revocation.Denylist
	feed *revocation.Subscriber
}

func (d denylist) Check(c *authz.Claims, now time.Time) error {
	if d.list.Revoked(revocation.Token{Issuer: c.Issuer, Subject: c.Subject, ID: c.ID, KeyID: c.KeyID, IssuedAt: c.IssuedAt, Now: now.Unix()}) {
		return authz.ErrRevoked
	}
	// Until the first replay is complete nothing says what is revoked: fail
	// closed (a new pod never admits a revoked token). Afterwards,
	// on_disconnect decides (Unavailable is only ever true with deny_after).
	if d.feed.NotReady() != "" || d.feed.Unavailable() {
		return authz.ErrRevocationUnavailable
	}
	return nil
}

// issuerCheckedSink applies events to the denylist and warns, once per
// issuer (up to 100), about events for an issuer this sidegate does not
// trust: iss is compared exactly, so such an event can match no token here
// (often a missing or extra trailing slash in the publisher's iss).
type issuerCheckedSink struct {
	list *revocation.Denylist
	// known is the configured issuers, replaced on reload.
	known  atomic.Pointer[map[string]bool]
	log    *slog.Logger
	mu     sync.Mutex
	warned map[string]bool
}

// setIssuers makes the issuers of cfg the ones events are checked against.
func (s *issuerCheckedSink) setIssuers(cfg *Config) {
	known := make(map[string]bool, len(cfg.Issuers))
	for _, is := range cfg.Issuers {
		known[is.Issuer] = true
	}
	s.known.Store(&known)
}

func (s *issuerCheckedSink) Apply(ev revocation.Event) bool {
	if !(*s.known.Load())[ev.Iss] {
		s.mu.Lock()
		first := !s.warned[ev.Iss] && len(s.warned) < 100
		if first {
			s.warned[ev.Iss] = true
		}
		s.mu.Unlock()
		if first {
			s.log.Warn("revocation event for an issuer not configured here: it matches no token (iss is compared exactly)", "iss", ev.Iss, "kind", ev.Kind)
		}
	}
	return s.list.Apply(ev)
}
