package revocation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// natsServer is an embedded nats-server with JetStream, on a random
// loopback port and a store in the test's temporary directory. It can be
// stopped and started again on the same port with the same store.
type natsServer struct {
	t      testing.TB
	dir    string
	port   int
	mutate func(*server.Options)
	srv    *server.Server
}

// natsStart runs a server; mutate (may be nil) adds authentication or TLS.
func natsStart(t testing.TB, mutate func(*server.Options)) *natsServer {
	t.Helper()
	s := &natsServer{t: t, dir: t.TempDir(), port: server.RANDOM_PORT, mutate: mutate}
	s.start()
	s.port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) start() {
	s.t.Helper()
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  s.dir,
	}
	if s.mutate != nil {
		s.mutate(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		s.t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatal("nats-server did not start")
	}
	s.srv = srv
}

// stop shuts the server down (its store stays).
func (s *natsServer) stop() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// restart starts the server again on the same port with the same store.
func (s *natsServer) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

func (s *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// natsOpts are options for a test: a subject and stream of its own.
func natsOpts(url string) NATSOptions {
	return NATSOptions{
		URL:          url,
		Subject:      "sidegate.revocations",
		Stream:       "SIDEGATE_REVOCATIONS",
		CreateStream: true,
		MaxAge:       2 * time.Hour,
		Name:         "sidegate test",
	}
}

// natsConnectJS connects a client that fails at once when NATS is not
// there, closed at the end of the test.
func natsConnectJS(t testing.TB, opts NATSOptions) jetstream.JetStream {
	t.Helper()
	nc, err := Connect(opts, natsTestLog(t), nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// natsJS connects a second client (the publisher) and makes sure of the
// stream.
func natsJS(t testing.TB, opts NATSOptions) jetstream.JetStream {
	t.Helper()
	js := natsConnectJS(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	return js
}

// natsPublish publishes ev and fails the test on an error.
func natsPublish(t testing.TB, js jetstream.JetStream, subject string, ev Event) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := Publish(ctx, js, subject, ev)
	if err != nil {
		t.Fatalf("publish %+v: %v", ev, err)
	}
	return seq
}

// natsPublishRaw publishes bytes that need not be an event.
func natsPublishRaw(t testing.TB, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, data)
	if err != nil {
		t.Fatalf("publish %d bytes: %v", len(data), err)
	}
	return ack.Sequence
}

// natsTestLog logs to the test log, until the test ends (NATS callbacks
// may still run then).
func natsTestLog(t testing.TB) *slog.Logger {
	w := &subTestWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type subTestWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *subTestWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// subSink is a Sink for tests: it counts each event's applications and
// records when it was first applied.
type subSink struct {
	mu    sync.Mutex
	count map[Event]int
	at    map[Event]time.Time
	order []Event
}

func newSubSink() *subSink {
	return &subSink{count: map[Event]int{}, at: map[Event]time.Time{}}
}

func (s *subSink) Apply(ev Event) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count[ev]++
	s.order = append(s.order, ev)
	if s.count[ev] > 1 {
		return false
	}
	s.at[ev] = now
	return true
}

// applied is how many times ev was applied.
func (s *subSink) applied(ev Event) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[ev]
}

func (s *subSink) appliedAt(ev Event) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[ev]
	return at, ok
}

// distinct is how many different events were applied.
func (s *subSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count)
}

// subWait polls cond until it holds or the deadline passes.
func subWait(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still not %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subRun starts a subscriber on sink and stops it when the test ends,
// failing the test if Run returns an error.
func subRun(t testing.TB, opts SubscriberOptions, sink Sink) (*Subscriber, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Logger == nil {
		opts.Logger = natsTestLog(t)
	}
	s, err := NewSubscriber(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return s, reg
}

// subMetric reads one sample of the registry: a counter or gauge value,
// or a histogram's sample count. labels are name, value pairs.
func subMetric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !subHasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func subHasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// natsPKI is a throwaway CA with a server certificate for 127.0.0.1 and
// a client certificate, written as PEM files.
type natsPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func natsNewPKI(t testing.TB, dir, name string) natsPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := natsPKI{caFile: filepath.Join(dir, name+"-ca.pem")}
	natsWritePEM(t, p.caFile, "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+"-"+cn+".pem"), filepath.Join(dir, name+"-"+cn+"-key.pem")
		natsWritePEM(t, certFile, "CERTIFICATE", der)
		natsWritePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = issue(3, "client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

func natsWritePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
