package revocation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// NATSOptions is how sidegate reaches the revocation stream, and how
// `sidegate revoke` publishes to it.
type NATSOptions struct {
	// URL is nats://host:4222, or a comma-separated list of servers.
	URL string
	// Subject carries the events, e.g. sidegate.revocations.
	Subject string
	// Stream is the JetStream stream capturing Subject, e.g.
	// SIDEGATE_REVOCATIONS.
	Stream string
	// CreateStream creates Stream when it is absent (file storage, one
	// subject, MaxAge retention).
	CreateStream bool
	// MaxAge is the retention of a created stream. It must be at least the
	// maximum token lifetime, or a pod started later would replay a stream
	// that has forgotten revocations of tokens still alive. 0 means 48h;
	// anything below an hour is raised to an hour. An existing stream is
	// never changed.
	MaxAge time.Duration

	// Authentication, as the NATS server asks for it.
	CredentialsFile string // .creds: user JWT and NKey seed
	NKeySeedFile    string
	Token           string
	User, Password  string
	// TLS: CAFile is the CA to trust (the system roots otherwise);
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CAFile, CertFile, KeyFile string

	// Name is the client connection name the server shows.
	Name string
}

const (
	natsDefaultMaxAge     = 48 * time.Hour
	natsMinMaxAge         = time.Hour
	natsReconnectMin      = 250 * time.Millisecond
	natsReconnectMax      = 5 * time.Second
	natsPingInterval      = 10 * time.Second
	natsMaxPingsOut       = 3
	natsStreamDescription = "sidegate revocation events"
)

// natsStreamMaxAge is the retention of a stream created for opts.
func natsStreamMaxAge(d time.Duration) time.Duration {
	if d <= 0 {
		return natsDefaultMaxAge
	}
	return max(d, natsMinMaxAge)
}

// Connect dials NATS with the options' authentication and TLS, then keeps
// the connection up forever: reconnects back off exponentially from 250ms
// to 5s with jitter (so a fleet of sidecars does not stampede a recovering
// server), never give up, and go on through authentication errors (a
// .creds file or client certificate replaced in place is read again on
// each attempt).
//
// A first attempt is made at once. If the server refuses the credentials
// or the TLS handshake fails, that is a configuration error and Connect
// returns it. If the server cannot be reached at all, Connect still
// returns a connection, which keeps trying in the background, so that
// starting during a NATS outage works (pass nats.RetryOnFailedConnect(false)
// to get the error instead, as a one-shot command would).
//
// handlers (connection callbacks, or any other nats.Option) are applied
// after sidegate's own options, so they can override them.
func Connect(opts NATSOptions, log *slog.Logger, handlers ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var servers []string
	for u := range strings.SplitSeq(opts.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			servers = append(servers, u)
		}
	}
	if len(servers) == 0 {
		return nil, errors.New("revocation: no NATS URL")
	}
	where := natsRedact(servers)
	auth, err := natsAuth(opts)
	if err != nil {
		return nil, err
	}
	o := nats.GetDefaultOptions()
	o.Servers = servers
	base := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(natsReconnectDelay),
		nats.IgnoreAuthErrorAbort(),
		// A connection that died silently (no RST) is noticed within
		// about 40s instead of nats.go's default of several minutes.
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("revocation: NATS error", "subject", sub.Subject, "error", err)
				return
			}
			log.Warn("revocation: NATS error", "error", err)
		}),
	}
	for _, opt := range slices.Concat(base, auth, handlers) {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("revocation: NATS options: %w", err)
		}
	}
	retry := o.RetryOnFailedConnect
	o.RetryOnFailedConnect = false
	nc, err := o.Connect()
	if err == nil {
		return nc, nil
	}
	if !retry || natsPermanent(err) {
		return nil, fmt.Errorf("revocation: connect to NATS %s: %w", where, err)
	}
	log.Warn("revocation: NATS unreachable, retrying in the background", "url", where, "error", err)
	o.RetryOnFailedConnect = true
	nc, err = o.Connect()
	if err != nil {
		return nil, fmt.Errorf("revocation: connect to NATS %s: %w", where, err)
	}
	return nc, nil
}

// natsAuth turns the authentication and TLS settings into options,
// reading the files now so that a missing or malformed one is reported
// before any network traffic.
func natsAuth(opts NATSOptions) ([]nats.Option, error) {
	var out []nats.Option
	if f := opts.CredentialsFile; f != "" {
		if err := natsCheckCreds(f); err != nil {
			return nil, fmt.Errorf("revocation: NATS credentials file %s: %w", f, err)
		}
		out = append(out, nats.UserCredentials(f))
	}
	if f := opts.NKeySeedFile; f != "" {
		o, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return nil, fmt.Errorf("revocation: NATS NKey seed file %s: %w", f, err)
		}
		out = append(out, o)
	}
	if opts.Token != "" {
		out = append(out, nats.Token(opts.Token))
	}
	if opts.User != "" || opts.Password != "" {
		out = append(out, nats.UserInfo(opts.User, opts.Password))
	}
	if opts.CAFile != "" {
		out = append(out, nats.RootCAs(opts.CAFile))
	}
	switch {
	case opts.CertFile != "" && opts.KeyFile != "":
		// Loaded now for the error; nats.go loads it again on each
		// connection, so a renewed certificate is picked up.
		if _, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile); err != nil {
			return nil, fmt.Errorf("revocation: NATS client certificate: %w", err)
		}
		out = append(out, nats.ClientCert(opts.CertFile, opts.KeyFile))
	case opts.CertFile != "" || opts.KeyFile != "":
		return nil, errors.New("revocation: NATS client certificate and key go together")
	}
	return out, nil
}

// natsCheckCreds reads a .creds file as nats.go will on each connection:
// a user JWT and an NKey seed.
func natsCheckCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer clear(b)
	if _, err := nkeys.ParseDecoratedJWT(b); err != nil {
		return fmt.Errorf("no user JWT: %w", err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return fmt.Errorf("no user NKey seed: %w", err)
	}
	kp.Wipe()
	return nil
}

// natsReconnectDelay is the wait before the attempts-th pass over the
// server list: exponential from natsReconnectMin to natsReconnectMax, with
// jitter over the upper half.
func natsReconnectDelay(attempts int) time.Duration {
	d := natsReconnectMin << min(max(attempts-1, 0), 10)
	d = min(d, natsReconnectMax)
	return d/2 + rand.N(d/2+1)
}

// natsPermanent reports whether a failed first connection is a
// configuration problem (refused credentials, a certificate that does not
// verify) rather than a server that is not there yet.
func natsPermanent(err error) bool {
	for _, target := range []error{
		nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		nats.ErrSecureConnRequired, nats.ErrSecureConnWanted, nats.ErrNkeysNotSupported,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var (
		netErr    net.Error
		opErr     *net.OpError
		pathErr   *fs.PathError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		return false
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the server, e.g. it rejected our certificate.
		return true
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return true
	case errors.As(err, &pathErr):
		return true
	case errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "after TLS handshake"):
		// The server completed the handshake, then hung up: it did not
		// like our certificate, but the alert saying so was lost in the
		// race with the close (nats.go's tlsHandshakeEOF).
		return true
	}
	// Anything else, including a TLS handshake cut short (a load balancer
	// with no server behind it), may pass.
	return false
}

// natsRedact lists the servers without any user, password or token in
// their URLs, for logs and errors.
func natsRedact(servers []string) string {
	out := make([]string, len(servers))
	for i, s := range servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			// No scheme (host:port) or unparsable: drop anything before @.
			if at := strings.LastIndex(s, "@"); at >= 0 {
				s = s[at+1:]
			}
			out[i] = s
			continue
		}
		u.User = nil
		out[i] = u.String()
	}
	return strings.Join(out, ",")
}

// EnsureStream returns the stream opts.Stream, checking that it captures
// opts.Subject. With opts.CreateStream it creates the stream when it is
// absent: file storage, subjects [opts.Subject], retention by age
// (see NATSOptions.MaxAge). An existing stream is used as it is.
func EnsureStream(ctx context.Context, js jetstream.JetStream, opts NATSOptions) (jetstream.Stream, error) {
	if opts.Stream == "" || opts.Subject == "" {
		return nil, errors.New("revocation: NATS stream and subject are required")
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && opts.CreateStream {
		stream, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        opts.Stream,
			Description: natsStreamDescription,
			Subjects:    []string{opts.Subject},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      natsStreamMaxAge(opts.MaxAge),
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another sidegate created it meanwhile, maybe with other
			// settings: use theirs.
			stream, err = js.Stream(ctx, opts.Stream)
		}
		if err != nil {
			return nil, fmt.Errorf("revocation: create stream %q for subject %q: %w", opts.Stream, opts.Subject, natsExplain(err))
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("revocation: stream %q not found: create it capturing subject %q, or let sidegate create it (create_stream: true)", opts.Stream, opts.Subject)
	case err != nil:
		return nil, fmt.Errorf("revocation: stream %q: %w", opts.Stream, natsExplain(err))
	}
	cfg := stream.CachedInfo().Config
	if cfg.Mirror != nil || len(cfg.Sources) > 0 {
		// A mirror or sourcing stream (a leaf node's local copy, say)
		// keeps the subjects of its origin: nothing to check here.
		return stream, nil
	}
	subjects := cfg.Subjects
	if len(subjects) == 0 {
		subjects = []string{cfg.Name}
	}
	for _, f := range subjects {
		if natsSubjectMatch(f, opts.Subject) {
			return stream, nil
		}
	}
	return nil, fmt.Errorf("revocation: stream %q captures %s, not subject %q", opts.Stream, strings.Join(subjects, ", "), opts.Subject)
}

// natsExplain adds what a bare JetStream error means for sidegate.
func natsExplain(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("JetStream is not enabled on this NATS server or account: %w", err)
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no JetStream answered (is JetStream enabled?): %w", err)
	}
	return err
}

// natsSubjectMatch reports whether the subject filter (with * and >
// wildcards) matches the literal subject.
func natsSubjectMatch(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}
