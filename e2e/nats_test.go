package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServer is Debian's nats-server with JetStream, run as a separate
// process. Its ports and store directory belong to the test, so it can be
// killed and started again on the same port with the same store.
type natsServer struct {
	t       *testing.T
	bin     string
	store   string // JetStream store directory (-sd)
	monitor string // monitoring listener, for /healthz
	proc    *peer
	URL     string // nats://127.0.0.1:port
}

// startNATS starts nats-server on picked free ports and waits until
// JetStream is healthy; the test is skipped when nats-server is not
// installed.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, bin: peerBinary(t, "nats-server", "/usr/sbin/nats-server"), store: t.TempDir()}
	n.proc = startWithRetry(t, func(addr string) *peer {
		n.monitor = freePorts(t, 1)[0]
		return n.launch(addr)
	})
	n.URL = "nats://" + n.proc.Addr
	n.waitHealthy()
	return n
}

func (n *natsServer) launch(addr string) *peer {
	host, port, _ := net.SplitHostPort(addr)
	_, monitorPort, _ := net.SplitHostPort(n.monitor)
	return startPeer(n.t, "nats-server", addr, nil, n.bin,
		"-n", "sidegate-e2e", "-a", host, "-p", port, "-m", monitorPort, "-js", "-sd", n.store)
}

// waitHealthy waits until the monitoring endpoint says JetStream is up
// (its streams recovered from the store).
func (n *natsServer) waitHealthy() {
	n.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	eventually(n.t, startDeadline, "nats-server /healthz 200", func() (bool, string) {
		if n.proc.exited() {
			n.t.Fatalf("nats-server exited with code %d", n.proc.code)
		}
		code, _, body, err := get(c, "http://"+n.monitor+"/healthz", nil)
		return err == nil && code == http.StatusOK, fmt.Sprint(code, body, err)
	})
}

// kill ends nats-server with SIGKILL, as a crash would.
func (n *natsServer) kill() { n.proc.kill() }

// restart starts nats-server again on the same ports and store, after kill.
func (n *natsServer) restart() {
	n.t.Helper()
	n.proc = n.launch(n.proc.Addr)
	if err := n.proc.waitListening(startDeadline); err != nil {
		n.t.Fatal(err)
	}
	n.waitHealthy()
}

// jetStream connects the test itself to the server, to read the stream
// and to publish in bulk; the connection is closed at test end.
func (n *natsServer) jetStream() jetstream.JetStream {
	n.t.Helper()
	nc, err := nats.Connect(n.URL, nats.Name("sidegate e2e"))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatal(err)
	}
	return js
}

// Where sidegate keeps its revocations (the defaults).
const (
	revocationSubject = "sidegate.revocations"
	revocationStream  = "SIDEGATE_REVOCATIONS"
)

// storedAt is when JetStream stored the revocation event with sequence
// seq: the moment it acknowledged the publish.
func storedAt(t *testing.T, js jetstream.JetStream, seq uint64) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, revocationStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("stream message %d: %v", seq, err)
	}
	return msg.Time
}

// publishJTIs publishes n revocations of random jtis of iss (tokens
// nobody presents), acknowledged by JetStream, straight from the test.
func publishJTIs(t *testing.T, js jetstream.JetStream, iss string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	exp := time.Now().Add(time.Hour).Unix()
	acks := make([]jetstream.PubAckFuture, n)
	for i := range acks {
		ev := mustJSON(t, map[string]any{"jti": fmt.Sprintf("filler-%d-%d", time.Now().UnixNano(), i), "iss": iss, "exp": exp})
		var err error
		if acks[i], err = js.PublishAsync(revocationSubject, ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			t.Fatalf("publishing a revocation: %v", err)
		case <-ctx.Done():
			t.Fatalf("%d revocations not acknowledged within a minute", js.PublishAsyncPending())
		}
	}
}

var revokedSeq = regexp.MustCompile(`stream ` + revocationStream + ` sequence (\d+)`)

// revoke runs "sidegate revoke --nats URL args..." to completion and
// returns the stream sequence it printed.
func revoke(t *testing.T, natsURL string, args ...string) uint64 {
	t.Helper()
	out, errOut, code := run(t, nil, append([]string{"revoke", "--nats", natsURL}, args...)...)
	m := revokedSeq.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("sidegate revoke %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
	}
	seq, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}
