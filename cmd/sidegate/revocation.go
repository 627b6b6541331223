package main

import (
	"fmt"
	"os"
	"strings"

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

func (d denylist) Check(c *authz.Claims) error {
	if d.list.Revoked(revocation.Token{Issuer: c.Issuer, Subject: c.Subject, ID: c.ID, KeyID: c.KeyID, IssuedAt: c.IssuedAt, Now: c.CheckedAt.Unix()}) {
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
