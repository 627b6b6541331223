package revocation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

func TestPublish(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	for i, ev := range []Event{
		{Kind: KindJTI, Iss: "https://login.example.com/", Value: "4f1c", Exp: 1767225600},
		{Kind: KindSub, Iss: "https://login.example.com/", Value: "usr_994", IssuedBefore: 1767225600},
		{Kind: KindKid, Iss: "https://login.example.com/", Value: "2024-rot-1"},
	} {
		seq := natsPublish(t, js, opts.Subject, ev)
		if seq != uint64(i+1) {
			t.Errorf("sequence %d, want %d", seq, i+1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := js.Stream(ctx, opts.Stream)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.GetMsg(ctx, seq)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ParseEvent(msg.Data); err != nil || got != ev {
			t.Errorf("stored %s: parsed %+v, %v; want %+v", msg.Data, got, err, ev)
		}
	}
}

func TestPublishRefusesInvalidEvent(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ev := range []Event{
		{Kind: KindJTI, Value: "no-iss"},
		{Kind: KindSub, Iss: "i", Value: "no-cutoff"},
		{Kind: "session", Iss: "i", Value: "x"},
		{Kind: KindJTI, Iss: "i", Value: strings.Repeat("x", MaxEventSize)},
	} {
		if _, err := Publish(ctx, js, opts.Subject, ev); err == nil {
			t.Errorf("%+v published", ev)
		}
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

func TestPublishWithoutStream(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsConnectJS(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Publish(ctx, js, opts.Subject, subJTI(1))
	if err == nil || !strings.Contains(err.Error(), "no JetStream stream captures") {
		t.Errorf("err = %v, want one saying no stream captures the subject", err)
	}
}

func TestEnsureStream(t *testing.T) {
	srv := natsStart(t, nil)
	js := natsConnectJS(t, natsOpts(srv.url()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("absent", func(t *testing.T) {
		opts := natsOpts(srv.url())
		opts.Stream, opts.CreateStream = "ABSENT", false
		_, err := EnsureStream(ctx, js, opts)
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{`stream "ABSENT" not found`, `"sidegate.revocations"`, "create_stream"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %s", err, want)
			}
		}
	})
	for _, tc := range []struct {
		maxAge, want time.Duration
	}{
		{2 * time.Hour, 2 * time.Hour},
		{time.Minute, time.Hour},
		{0, 48 * time.Hour},
	} {
		t.Run(fmt.Sprintf("create max_age %v", tc.maxAge), func(t *testing.T) {
			opts := natsOpts(srv.url())
			opts.Stream = fmt.Sprintf("CREATED_%d", tc.maxAge/time.Second)
			opts.Subject = "created." + opts.Stream
			opts.MaxAge = tc.maxAge
			stream, err := EnsureStream(ctx, js, opts)
			if err != nil {
				t.Fatal(err)
			}
			cfg := stream.CachedInfo().Config
			if !slices.Equal(cfg.Subjects, []string{opts.Subject}) || cfg.MaxAge != tc.want || cfg.Storage != jetstream.FileStorage {
				t.Errorf("created with subjects %v, max_age %v, storage %v", cfg.Subjects, cfg.MaxAge, cfg.Storage)
			}
			// Again: the existing stream is used as it is.
			opts.MaxAge = 3 * time.Hour
			stream, err = EnsureStream(ctx, js, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := stream.CachedInfo().Config.MaxAge; got != tc.want {
				t.Errorf("existing stream changed: max_age %v", got)
			}
		})
	}
	t.Run("wrong subject", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.*"}}); err != nil {
			t.Fatal(err)
		}
		opts := natsOpts(srv.url())
		opts.Stream = "OTHER"
		_, err := EnsureStream(ctx, js, opts)
		if err == nil || !strings.Contains(err.Error(), `stream "OTHER" captures other.*, not subject "sidegate.revocations"`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("wildcard subject", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WIDE", Subjects: []string{"wide.>"}}); err != nil {
			t.Fatal(err)
		}
		opts := natsOpts(srv.url())
		opts.Stream, opts.Subject = "WIDE", "wide.sidegate.revocations"
		if _, err := EnsureStream(ctx, js, opts); err != nil {
			t.Error(err)
		}
	})
}

func TestEnsureStreamWithoutJetStream(t *testing.T) {
	srv := natsStart(t, func(o *server.Options) { o.JetStream = false })
	opts := natsOpts(srv.url())
	js := natsConnectJS(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := EnsureStream(ctx, js, opts)
	if err == nil || !strings.Contains(err.Error(), "JetStream") {
		t.Errorf("err = %v, want one about JetStream", err)
	}
}

func TestNATSSubjectMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{">", "a", true},
		{"*.b", "a.b", true},
		{"a.b.c", "a.b", false},
	} {
		if got := natsSubjectMatch(tc.filter, tc.subject); got != tc.want {
			t.Errorf("natsSubjectMatch(%q, %q) = %v", tc.filter, tc.subject, got)
		}
	}
}

func TestNATSReconnectDelay(t *testing.T) {
	for attempts := 0; attempts < 100; attempts++ {
		want := min(natsReconnectMin<<min(max(attempts-1, 0), 10), natsReconnectMax)
		if d := natsReconnectDelay(attempts); d < want/2 || d > want {
			t.Errorf("attempt %d: %v, want within [%v, %v]", attempts, d, want/2, want)
		}
	}
}

func TestNATSRedact(t *testing.T) {
	got := natsRedact([]string{"nats://user:pw@h1:4222", "nats://tok3n@h2:4222", "u:pw@h3:4222", "tls://h4:4222"})
	if strings.Contains(got, "pw") || strings.Contains(got, "tok3n") || strings.Contains(got, "user") {
		t.Errorf("natsRedact = %q", got)
	}
	if got != "nats://h1:4222,nats://h2:4222,h3:4222,tls://h4:4222" {
		t.Errorf("natsRedact = %q", got)
	}
}

// A server that is not there yet is not an error: the connection keeps
// trying, and works once the server starts.
func TestConnectDuringOutage(t *testing.T) {
	port := subFreePort(t)
	opts := natsOpts(fmt.Sprintf("nats://sidegate:hunter2@127.0.0.1:%d", port))

	_, err := Connect(opts, nil, nats.RetryOnFailedConnect(false))
	if err == nil {
		t.Fatal("no error with RetryOnFailedConnect(false)")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the password is in the error: %v", err)
	}

	nc, err := Connect(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}
	srv := &natsServer{t: t, dir: t.TempDir(), port: port, mutate: func(o *server.Options) {
		o.Username, o.Password = "sidegate", "hunter2"
	}}
	srv.start()
	t.Cleanup(srv.stop)
	subWait(t, subWithin, "connected", nc.IsConnected)
}

func TestConnectRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	pki := natsNewPKI(t, dir, "ca")
	for name, mutate := range map[string]func(*NATSOptions){
		"missing creds":  func(o *NATSOptions) { o.CredentialsFile = filepath.Join(dir, "absent.creds") },
		"junk creds":     func(o *NATSOptions) { o.CredentialsFile = junk },
		"missing seed":   func(o *NATSOptions) { o.NKeySeedFile = filepath.Join(dir, "absent.nk") },
		"junk seed":      func(o *NATSOptions) { o.NKeySeedFile = junk },
		"junk CA":        func(o *NATSOptions) { o.CAFile = junk },
		"cert, no key":   func(o *NATSOptions) { o.CertFile = pki.clientCert },
		"key, no cert":   func(o *NATSOptions) { o.KeyFile = pki.clientKey },
		"mismatched key": func(o *NATSOptions) { o.CertFile, o.KeyFile = pki.clientCert, pki.serverKey },
		"no URL":         func(o *NATSOptions) { o.URL = " , " },
	} {
		opts := natsOpts("nats://127.0.0.1:1")
		mutate(&opts)
		if nc, err := Connect(opts, nil); err == nil {
			nc.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

// TestConnectAuth runs servers secured the ways users secure NATS; with the
// right settings sidegate publishes, with wrong ones Connect says why.
func TestConnectAuth(t *testing.T) {
	dir := t.TempDir()
	pki := natsNewPKI(t, dir, "good")
	rogue := natsNewPKI(t, dir, "rogue")
	userSeed, userPub := natsUserKey(t, dir, "user.nk")
	otherSeed, _ := natsUserKey(t, dir, "other.nk")
	op := natsNewOperator(t, dir)

	mtls := func(o *server.Options) {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.caFile, Verify: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, true, cfg, 5
	}
	serverTLS := func(o *server.Options) {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.serverCert, KeyFile: pki.serverKey})
		if err != nil {
			t.Fatal(err)
		}
		o.TLS, o.TLSConfig, o.TLSTimeout = true, cfg, 5
	}
	for _, tc := range []struct {
		name    string
		server  func(*server.Options)
		client  func(*NATSOptions)
		wantErr string // "" for success
	}{
		{"token", func(o *server.Options) { o.Authorization = "s3cret" },
			func(c *NATSOptions) { c.Token = "s3cret" }, ""},
		{"wrong token", func(o *server.Options) { o.Authorization = "s3cret" },
			func(c *NATSOptions) { c.Token = "guess" }, "authorization violation"},
		{"no token", func(o *server.Options) { o.Authorization = "s3cret" },
			func(*NATSOptions) {}, "authorization violation"},
		{"user and password", func(o *server.Options) { o.Username, o.Password = "sidegate", "pw" },
			func(c *NATSOptions) { c.User, c.Password = "sidegate", "pw" }, ""},
		{"wrong password", func(o *server.Options) { o.Username, o.Password = "sidegate", "pw" },
			func(c *NATSOptions) { c.User, c.Password = "sidegate", "nope" }, "authorization violation"},
		{"nkey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: userPub}} },
			func(c *NATSOptions) { c.NKeySeedFile = userSeed }, ""},
		{"wrong nkey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: userPub}} },
			func(c *NATSOptions) { c.NKeySeedFile = otherSeed }, "authorization violation"},
		{"credentials", op.mutate, func(c *NATSOptions) { c.CredentialsFile = op.creds }, ""},
		{"credentials of another operator", op.mutate,
			func(c *NATSOptions) { c.CredentialsFile = natsNewOperator(t, t.TempDir()).creds }, "authorization violation"},
		{"TLS", serverTLS, func(c *NATSOptions) { c.CAFile = pki.caFile }, ""},
		{"TLS, untrusted server", serverTLS, func(c *NATSOptions) { c.CAFile = rogue.caFile }, "certificate signed by unknown authority"},
		{"mutual TLS", mtls, func(c *NATSOptions) {
			c.CAFile, c.CertFile, c.KeyFile = pki.caFile, pki.clientCert, pki.clientKey
		}, ""},
		{"mutual TLS, client cert of another CA", mtls, func(c *NATSOptions) {
			c.CAFile, c.CertFile, c.KeyFile = pki.caFile, rogue.clientCert, rogue.clientKey
		}, "tls"},
		{"mutual TLS, no client cert", mtls, func(c *NATSOptions) { c.CAFile = pki.caFile }, "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natsStart(t, tc.server)
			opts := natsOpts(srv.url())
			tc.client(&opts)
			start := time.Now()
			nc, err := Connect(opts, natsTestLog(t))
			if tc.wantErr != "" {
				if err == nil {
					nc.Close()
					t.Fatalf("connected; want an error saying %q", tc.wantErr)
				}
				if !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
					t.Errorf("err = %v, want one saying %q", err, tc.wantErr)
				}
				t.Logf("%s: %v (after %v)", tc.name, err, time.Since(start).Round(time.Millisecond))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := EnsureStream(ctx, js, opts); err != nil {
				t.Fatal(err)
			}
			if seq, err := Publish(ctx, js, opts.Subject, subJTI(1)); err != nil || seq != 1 {
				t.Fatalf("Publish = %d, %v", seq, err)
			}
			// And the subscriber works through it too.
			sink := newSubSink()
			s, _ := subRun(t, SubscriberOptions{NATS: opts}, sink)
			subReady(t, s)
			subAppliedOnce(t, sink, []Event{subJTI(1)})
		})
	}
}

func TestConnectErrorsAreNotRetried(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nats.ErrAuthorization, true},
		{fmt.Errorf("wrapped: %w", nats.ErrAuthExpired), true},
		{nats.ErrNoServers, false},
		{nats.ErrTimeout, false},
		{errors.New("dial tcp 127.0.0.1:4222: connect: connection refused"), false},
		{fmt.Errorf("%w: %w", nats.ErrTLS, io.EOF), false},
		{fmt.Errorf("%w: connection closed by remote after TLS handshake: %w", nats.ErrTLS, io.EOF), true},
		{fmt.Errorf("%w: %w", nats.ErrTLS, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", IsNotFound: true}}, false},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, true},
	} {
		if got := natsPermanent(tc.err); got != tc.want {
			t.Errorf("natsPermanent(%v) = %v", tc.err, got)
		}
	}
}

// natsUserKey writes a new user NKey seed to dir/name; it returns the
// file and the public key.
func natsUserKey(t testing.TB, dir, name string) (seedFile, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	if pub, err = kp.PublicKey(); err != nil {
		t.Fatal(err)
	}
	seedFile = filepath.Join(dir, name)
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return seedFile, pub
}

// natsOperator is decentralized (JWT) auth: an operator, a system account,
// an account with JetStream, and a user's .creds file.
type natsOperator struct {
	mutate func(*server.Options)
	creds  string
}

func natsNewOperator(t testing.TB, dir string) natsOperator {
	t.Helper()
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	okp, _ := nkeys.CreateOperator()
	opub := must(okp.PublicKey())
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "test"
	skp, _ := nkeys.CreateAccount()
	spub := must(skp.PublicKey())
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt := must(sc.Encode(okp))
	oc.SystemAccount = spub
	if _, err := oc.Encode(okp); err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub := must(akp.PublicKey())
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "SIDEGATE"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt := must(ac.Encode(okp))
	ukp, _ := nkeys.CreateUser()
	uc := jwt.NewUserClaims(must(ukp.PublicKey()))
	ujwt := must(uc.Encode(akp))
	useed, err := ukp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "user-*.creds")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(creds); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return natsOperator{
		creds: f.Name(),
		mutate: func(o *server.Options) {
			r := &server.MemAccResolver{}
			r.Store(spub, sjwt)
			r.Store(apub, ajwt)
			o.TrustedOperators = []*jwt.OperatorClaims{oc}
			o.SystemAccount = spub
			o.AccountResolver = r
		},
	}
}
