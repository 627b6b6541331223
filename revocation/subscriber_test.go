package revocation

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

const subWithin = 20 * time.Second

// subReady waits for the subscriber's start-up replay to finish.
func subReady(t testing.TB, s *Subscriber) {
	t.Helper()
	subWait(t, subWithin, "ready", func() bool { return s.NotReady() == "" })
}

// subAppliedOnce waits for every event to be applied, then checks each
// was applied exactly once.
func subAppliedOnce(t testing.TB, sink *subSink, evs []Event) {
	t.Helper()
	subWait(t, subWithin, fmt.Sprintf("all %d events applied", len(evs)), func() bool {
		for _, ev := range evs {
			if sink.applied(ev) == 0 {
				return false
			}
		}
		return true
	})
	for _, ev := range evs {
		if n := sink.applied(ev); n != 1 {
			t.Errorf("%+v applied %d times, want once", ev, n)
		}
	}
}

func subJTI(i int) Event {
	return Event{Kind: KindJTI, Iss: "https://login.example.com/", Value: fmt.Sprintf("jti-%d", i), Exp: 4102444800}
}

func TestSubscriberEventKinds(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subReady(t, s)

	evs := []Event{
		{Kind: KindJTI, Iss: "https://login.example.com/", Value: "4f1c", Exp: 1767225600},
		{Kind: KindJTI, Iss: "https://login.example.com/", Value: "no-exp"},
		{Kind: KindSub, Iss: "https://login.example.com/", Value: "usr_994", IssuedBefore: 1767225600},
		{Kind: KindKid, Iss: "https://login.example.com/", Value: "2024-rot-1"},
	}
	var last uint64
	for _, ev := range evs {
		last = natsPublish(t, js, opts.Subject, ev)
	}
	subAppliedOnce(t, sink, evs)
	// The same revocation again changes nothing.
	last = natsPublish(t, js, opts.Subject, evs[0])
	subWait(t, subWithin, "the repeat handled", func() bool { return s.LastSequence() == last })
	if n := sink.applied(evs[0]); n != 2 {
		t.Errorf("repeat: Apply called %d times in all, want 2", n)
	}

	for outcome, want := range map[string]float64{"applied": 4, "unchanged": 1, "invalid": 0} {
		if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", outcome); got != want {
			t.Errorf("events_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	if got := subMetric(t, reg, "sidegate_revocation_last_sequence"); got != float64(last) {
		t.Errorf("last_sequence = %v, want %d", got, last)
	}
	if got := subMetric(t, reg, "sidegate_revocation_connected"); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	// All five were live events: each has a lag.
	if got := subMetric(t, reg, "sidegate_revocation_lag_seconds"); got != 5 {
		t.Errorf("lag_seconds count = %v, want 5", got)
	}
	if s.Unavailable() {
		t.Error("Unavailable with DenyAfter 0")
	}
}

func TestSubscriberMetricsStartAtZero(t *testing.T) {
	srv := natsStart(t, nil)
	_, reg := subRun(t, SubscriberOptions{NATS: natsOpts(srv.url())}, newSubSink())
	for _, outcome := range []string{"applied", "unchanged", "invalid"} {
		if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", outcome); got != 0 {
			t.Errorf("events_total{outcome=%q} = %v at start", outcome, got)
		}
	}
}

// subGate is a sink that holds every Apply until it is opened.
type subGate struct {
	*subSink
	open chan struct{}
}

func (g subGate) Apply(ev Event) bool {
	<-g.open
	return g.subSink.Apply(ev)
}

func TestSubscriberReplayGatesReadiness(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	const n = 500
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = subJTI(i)
		natsPublish(t, js, opts.Subject, evs[i])
	}

	gate := subGate{newSubSink(), make(chan struct{})}
	s, _ := subRun(t, SubscriberOptions{NATS: opts}, gate)
	// Held at the first event: not ready, and it says how far it got.
	subWait(t, subWithin, "replaying", func() bool { return strings.HasPrefix(s.NotReady(), "replaying 0/") })
	if got := s.NotReady(); got != fmt.Sprintf("replaying 0/%d", n) {
		t.Errorf("NotReady = %q", got)
	}
	close(gate.open)
	// The first time it says ready, every event is in.
	subWait(t, subWithin, "ready", func() bool {
		if s.NotReady() != "" {
			return false
		}
		if got := gate.distinct(); got != n {
			t.Fatalf("ready with %d of %d events applied", got, n)
		}
		return true
	})
	subAppliedOnce(t, gate.subSink, evs)
	// Replayed events are in stream order.
	gate.mu.Lock()
	order := slices.Clone(gate.order)
	gate.mu.Unlock()
	if !slices.Equal(order, evs) {
		t.Error("events applied out of stream order")
	}
}

func TestSubscriberEmptyStreamIsReady(t *testing.T) {
	srv := natsStart(t, nil)
	s, _ := subRun(t, SubscriberOptions{NATS: natsOpts(srv.url())}, newSubSink())
	subReady(t, s)
}

// The stream may capture other subjects: the replay ends at the last
// event of ours, not at a sequence it will never be given.
func TestSubscriberReplayWithOtherSubjects(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	wide := opts
	wide.Subject = "sidegate.>"
	js := natsJS(t, wide)
	natsPublish(t, js, opts.Subject, subJTI(1))
	natsPublishRaw(t, js, "sidegate.other", []byte("not ours"))
	natsPublishRaw(t, js, "sidegate.other", []byte("not ours either"))

	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subReady(t, s)
	if sink.applied(subJTI(1)) != 1 {
		t.Error("ready before our event was applied")
	}
	if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", "invalid"); got != 0 {
		t.Errorf("other subjects were read: invalid = %v", got)
	}
}

// subLogs captures a subscriber's log lines.
type subLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *subLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *subLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestSubscriberSkipsInvalidEvents(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	const secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln"
	garbage := map[string][]byte{
		"not JSON":         []byte("revoke " + secret),
		"empty":            {},
		"null":             []byte("null"),
		"array":            []byte(`["` + secret + `"]`),
		"string":           []byte(`"` + secret + `"`),
		"jti not a string": []byte(`{"jti": 42, "iss": "https://login.example.com/"}`),
		"iss not a string": []byte(`{"jti": "a", "iss": ["https://login.example.com/"]}`),
		"exp not a number": []byte(`{"jti": "a", "iss": "i", "exp": "tomorrow"}`),
		"exp negative":     []byte(`{"jti": "a", "iss": "i", "exp": -1}`),
		"exp overflow":     []byte(`{"jti": "a", "iss": "i", "exp": 1e400}`),
		"missing iss":      []byte(`{"jti": "` + secret + `"}`),
		"missing cutoff":   []byte(`{"sub": "usr_1", "iss": "i"}`),
		"no kind":          []byte(`{"iss": "i", "token": "` + secret + `"}`),
		"several kinds":    []byte(`{"jti": "a", "kid": "k", "iss": "i"}`),
		"trailing data":    []byte(`{"kid": "k", "iss": "i"} {"kid": "k2", "iss": "i"}`),
		"oversized":        []byte(`{"jti": "` + strings.Repeat("a", MaxEventSize) + `", "iss": "i"}`),
		"deeply nested":    []byte(strings.Repeat("[", 100000)),
		"invalid UTF-8":    []byte("{\"jti\": \"\xff\xfe\", \"iss\": \"i\", \"exp\": 1"),
	}
	logs := &subLogs{}
	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts, Logger: slog.New(slog.NewTextHandler(logs, nil))}, sink)
	subReady(t, s)

	var good []Event
	var badSeqs []uint64
	i := 0
	for _, data := range garbage {
		badSeqs = append(badSeqs, natsPublishRaw(t, js, opts.Subject, data))
		ev := subJTI(i)
		natsPublish(t, js, opts.Subject, ev)
		good = append(good, ev)
		i++
	}
	subAppliedOnce(t, sink, good)
	if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", "invalid"); got != float64(len(garbage)) {
		t.Errorf("invalid = %v, want %d", got, len(garbage))
	}
	if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", "applied"); got != float64(len(good)) {
		t.Errorf("applied = %v, want %d", got, len(good))
	}
	out := logs.String()
	for _, seq := range badSeqs {
		if n := strings.Count(out, fmt.Sprintf("stream_sequence=%d ", seq)); n != 1 {
			t.Errorf("invalid event %d logged %d times, want once", seq, n)
		}
	}
	if strings.Contains(out, secret) || strings.Contains(out, "c2VjcmV0") {
		t.Error("an event's content reached the log")
	}
	if s.NotReady() != "" {
		t.Error("invalid events made the subscriber unready")
	}
}

// subPanicSink panics on one value.
type subPanicSink struct{ *subSink }

func (p subPanicSink) Apply(ev Event) bool {
	if ev.Value == "boom" {
		panic("sink exploded")
	}
	return p.subSink.Apply(ev)
}

func TestSubscriberSurvivesSinkPanic(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	sink := subPanicSink{newSubSink()}
	s, reg := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subReady(t, s)
	natsPublish(t, js, opts.Subject, Event{Kind: KindKid, Iss: "i", Value: "boom"})
	after := Event{Kind: KindKid, Iss: "i", Value: "after"}
	natsPublish(t, js, opts.Subject, after)
	subAppliedOnce(t, sink.subSink, []Event{after})
	if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", "invalid"); got != 1 {
		t.Errorf("invalid = %v, want 1", got)
	}
}

// NATS stops and comes back with its store, on the same port, while
// events are published: every one is applied, once.
func TestSubscriberReconnectNoGapNoDuplicate(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subReady(t, s)

	var evs []Event
	publish := func(js jetstream.JetStream, from, to int) {
		for i := from; i < to; i++ {
			ev := subJTI(i)
			natsPublish(t, js, opts.Subject, ev)
			evs = append(evs, ev)
		}
	}
	publish(js, 0, 20)
	subAppliedOnce(t, sink, evs)
	// These may or may not reach the subscriber before the server stops.
	publish(js, 20, 40)
	srv.stop()
	subWait(t, subWithin, "disconnected", func() bool { return subMetric(t, reg, "sidegate_revocation_connected") == 0 })
	time.Sleep(500 * time.Millisecond) // an outage, during which the reconnect backoff grows

	srv.start()
	// A second client publishes at once, most likely before the
	// subscriber is back.
	js2 := natsJS(t, opts)
	t.Logf("publishing after the restart; subscriber connected = %v", subMetric(t, reg, "sidegate_revocation_connected"))
	publish(js2, 40, 60)
	subAppliedOnce(t, sink, evs)
	subWait(t, subWithin, "reconnected", func() bool { return subMetric(t, reg, "sidegate_revocation_connected") == 1 })

	// And it still follows live.
	publish(js2, 60, 61)
	subAppliedOnce(t, sink, evs)
	if got := sink.distinct(); got != len(evs) {
		t.Errorf("%d distinct events applied, want %d", got, len(evs))
	}
	if got := subMetric(t, reg, "sidegate_revocation_events_total", "outcome", "unchanged"); got != 0 {
		t.Errorf("unchanged = %v: some event was applied twice", got)
	}
}

// The stream is deleted and created again: its sequences start over, and
// the subscriber must not skip the new stream's events as already seen.
func TestSubscriberStreamReplaced(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	sink := newSubSink()
	s, _ := subRun(t, SubscriberOptions{NATS: opts}, sink)
	var evs []Event
	for i := range 5 {
		evs = append(evs, subJTI(i))
		natsPublish(t, js, opts.Subject, evs[i])
	}
	subReady(t, s)
	subAppliedOnce(t, sink, evs)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, opts.Stream); err != nil {
		t.Fatal(err)
	}
	// The subscriber creates it again (CreateStream), or a publisher does.
	subWait(t, subWithin, "stream recreated", func() bool {
		_, err := js.Stream(ctx, opts.Stream)
		return err == nil
	})
	fresh := Event{Kind: KindKid, Iss: "i", Value: "after-recreate"}
	if seq := natsPublish(t, js, opts.Subject, fresh); seq != 1 {
		t.Logf("first sequence of the new stream: %d", seq)
	}
	subAppliedOnce(t, sink, []Event{fresh})
}

func TestSubscriberStartsDuringOutage(t *testing.T) {
	port := subFreePort(t)
	opts := natsOpts(fmt.Sprintf("nats://127.0.0.1:%d", port))
	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts, DenyAfter: 200 * time.Millisecond}, sink)
	subWait(t, subWithin, "unavailable (never connected)", s.Unavailable)
	if why := s.NotReady(); !strings.HasPrefix(why, "connecting to NATS") {
		t.Errorf("NotReady = %q, want connecting to NATS…", why)
	}
	if got := subMetric(t, reg, "sidegate_revocation_connected"); got != 0 {
		t.Errorf("connected = %v", got)
	}

	srv := &natsServer{t: t, dir: t.TempDir(), port: port}
	srv.start()
	t.Cleanup(srv.stop)
	subReady(t, s)
	subWait(t, subWithin, "available", func() bool { return !s.Unavailable() })
	js := natsJS(t, opts)
	ev := subJTI(1)
	natsPublish(t, js, opts.Subject, ev)
	subAppliedOnce(t, sink, []Event{ev})
}

// subFreePort is a loopback port nothing listens on.
func subFreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestSubscriberOnDisconnect(t *testing.T) {
	t.Run("deny_after", func(t *testing.T) {
		srv := natsStart(t, nil)
		s, _ := subRun(t, SubscriberOptions{NATS: natsOpts(srv.url()), DenyAfter: 200 * time.Millisecond}, newSubSink())
		subReady(t, s)
		subWait(t, subWithin, "available", func() bool { return !s.Unavailable() })
		srv.stop()
		subWait(t, subWithin, "unavailable", s.Unavailable)
		srv.start()
		subWait(t, subWithin, "available again", func() bool { return !s.Unavailable() })
		if s.NotReady() != "" {
			t.Error("a disconnection made the subscriber unready")
		}
	})
	t.Run("serve", func(t *testing.T) {
		srv := natsStart(t, nil)
		s, reg := subRun(t, SubscriberOptions{NATS: natsOpts(srv.url())}, newSubSink())
		subReady(t, s)
		srv.stop()
		subWait(t, subWithin, "disconnected", func() bool { return subMetric(t, reg, "sidegate_revocation_connected") == 0 })
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if s.Unavailable() {
				t.Fatal("Unavailable with on_disconnect serve")
			}
		}
		if s.NotReady() != "" {
			t.Error("a disconnection made the subscriber unready")
		}
	})
}

func TestSubscriberWaitsForStream(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	opts.CreateStream = false
	sink := newSubSink()
	s, _ := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subWait(t, subWithin, "reporting the missing stream", func() bool {
		return strings.Contains(s.NotReady(), `stream "SIDEGATE_REVOCATIONS" not found`)
	})
	// Someone creates it: the subscriber picks it up.
	create := opts
	create.CreateStream = true
	js := natsJS(t, create)
	ev := subJTI(7)
	natsPublish(t, js, opts.Subject, ev)
	subReady(t, s)
	subAppliedOnce(t, sink, []Event{ev})
}

func TestNewSubscriberRejects(t *testing.T) {
	good := SubscriberOptions{NATS: natsOpts("nats://127.0.0.1:4222")}
	for name, tc := range map[string]struct {
		opts SubscriberOptions
		sink Sink
	}{
		"no sink":            {good, nil},
		"no url":             {SubscriberOptions{NATS: NATSOptions{Subject: "s", Stream: "S"}}, newSubSink()},
		"no subject":         {SubscriberOptions{NATS: NATSOptions{URL: "nats://x", Stream: "S"}}, newSubSink()},
		"negative DenyAfter": {SubscriberOptions{NATS: good.NATS, DenyAfter: -time.Second}, newSubSink()},
	} {
		if _, err := NewSubscriber(tc.opts, tc.sink); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Publish-to-applied latency on loopback, for BENCHMARKS.md: each event's
// time from the Publish call to its Apply, over 200 events published one
// by one, first each alone (the next once the last is applied: a
// revocation as it happens), then back to back (a burst: queueing
// included). Figures only; no timing is asserted.
func TestSubscriberLag(t *testing.T) {
	srv := natsStart(t, nil)
	opts := natsOpts(srv.url())
	js := natsJS(t, opts)
	sink := newSubSink()
	s, reg := subRun(t, SubscriberOptions{NATS: opts}, sink)
	subReady(t, s)

	const n = 200
	for _, burst := range []bool{false, true} {
		evs := make([]Event, n)
		sent := make([]time.Time, n)
		for i := range evs {
			evs[i] = subJTI(i)
			if burst {
				evs[i].Value += "-burst"
			}
			sent[i] = time.Now()
			natsPublish(t, js, opts.Subject, evs[i])
			if !burst {
				subAppliedOnce(t, sink, evs[i:i+1])
			}
		}
		subAppliedOnce(t, sink, evs)
		lat := make([]time.Duration, n)
		for i, ev := range evs {
			at, _ := sink.appliedAt(ev)
			lat[i] = at.Sub(sent[i])
		}
		slices.Sort(lat)
		mode := "one at a time"
		if burst {
			mode = "back to back"
		}
		t.Logf("publish to applied, %d events %s: p50 %v, p99 %v, max %v", n, mode,
			subPercentile(lat, 50), subPercentile(lat, 99), lat[n-1])
	}
	t.Logf("lag histogram (JetStream timestamp to applied), all %d: p50 ≤ %gs, p99 ≤ %gs",
		2*n, subHistogramQuantile(t, reg, 0.50), subHistogramQuantile(t, reg, 0.99))
}

// BenchmarkPublishToApplied publishes one event per iteration and waits
// for it to be applied; it reports the p50 and p99 of that round.
func BenchmarkPublishToApplied(b *testing.B) {
	srv := natsStart(b, nil)
	opts := natsOpts(srv.url())
	js := natsJS(b, opts)
	sink := &subNotifySink{applied: make(chan Event, 1)}
	s, _ := subRun(b, SubscriberOptions{NATS: opts, Logger: slog.New(slog.DiscardHandler)}, sink)
	subReady(b, s)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := subJTI(i)
		start := time.Now()
		natsPublish(b, js, opts.Subject, ev)
		for got := <-sink.applied; got != ev; got = <-sink.applied {
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(subPercentile(lat, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(subPercentile(lat, 99).Microseconds()), "p99-µs")
}

// subNotifySink reports each applied event on a channel.
type subNotifySink struct{ applied chan Event }

func (s *subNotifySink) Apply(ev Event) bool {
	s.applied <- ev
	return true
}

// subPercentile is the p-th percentile of sorted durations.
func subPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// subHistogramQuantile is the upper bound of the lag bucket holding the
// q-quantile.
func subHistogramQuantile(t testing.TB, reg *prometheus.Registry, q float64) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidegate_revocation_lag_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		want := q * float64(h.GetSampleCount())
		for _, b := range h.GetBucket() {
			if float64(b.GetCumulativeCount()) >= want {
				return b.GetUpperBound()
			}
		}
	}
	return math.Inf(1)
}
