package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Sink receives the events, in stream order. Apply reports whether the
// event changed anything. The Denylist is the Sink in production.
type Sink interface {
	Apply(Event) bool
}

// SubscriberOptions configure a Subscriber.
type SubscriberOptions struct {
	NATS NATSOptions
	// DenyAfter is revocation.on_disconnect: 0 ("serve") keeps enforcing
	// the denylist already held however long NATS is away; above 0,
	// Unavailable turns true once the feed has been down that long, so
	// that requests are denied rather than checked against a denylist
	// that may be missing revocations.
	DenyAfter time.Duration
	Logger    *slog.Logger
	// Registerer takes the subscriber's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock for the lag metric (time.Now when nil).
	Now func() time.Time
}

// Subscriber feeds a Sink from the NATS JetStream stream of revocation
// events. At start an ordered consumer replays the stream from its first
// message; NotReady stays non-empty until the replay has reached the
// stream's last sequence as of start. Then it follows the stream live,
// across reconnects, resuming after the last sequence handled, so that no
// event is missed and none is applied twice.
type Subscriber struct {
	opts SubscriberOptions
	sink Sink
	log  *slog.Logger
	now  func() time.Time
	m    subMetrics

	running atomic.Bool

	// Readiness. phase is why the subscriber is not ready (subPhaseReplay
	// is rendered with last and target).
	ready  atomic.Bool
	phase  atomic.Pointer[string]
	target atomic.Uint64 // the stream's last sequence at start
	last   atomic.Uint64 // last stream sequence handled
	began  time.Time

	// handleMu serializes message handling across consumer sessions.
	handleMu sync.Mutex

	// unavailable is what Unavailable answers: one atomic load on the
	// request path. The link state below decides it, under mu.
	unavailable atomic.Bool
	mu          sync.Mutex
	connected   bool // the NATS connection is up
	consuming   bool // a consumer is following the stream
	up          bool // connected && consuming
	stopped     bool
	epoch       uint64 // bumped on every up/down change
	denyTimer   *time.Timer
	lastConnErr string

	// check asks the running session to confirm its stream still exists
	// (after a reconnect, or when the server deleted our consumer).
	check chan struct{}
}

const (
	subPhaseConnecting = "connecting to NATS"
	subPhaseStream     = "opening the stream"
	subPhaseReplay     = "replaying"

	subCallTimeout  = 10 * time.Second
	subRetryMin     = 500 * time.Millisecond
	subRetryMax     = 30 * time.Second
	subReplayCheck  = 2 * time.Second
	subDrainTimeout = 5 * time.Second
	subOutcomeApply = "applied"
	subOutcomeSame  = "unchanged"
	subOutcomeBad   = "invalid"
)

// NewSubscriber checks the options and registers the metrics. Run starts
// the work.
func NewSubscriber(opts SubscriberOptions, sink Sink) (*Subscriber, error) {
	if sink == nil {
		return nil, errors.New("revocation: subscriber needs a sink")
	}
	if opts.NATS.URL == "" || opts.NATS.Subject == "" || opts.NATS.Stream == "" {
		return nil, errors.New("revocation: NATS url, subject and stream are required")
	}
	if opts.DenyAfter < 0 {
		return nil, errors.New("revocation: DenyAfter must not be negative")
	}
	s := &Subscriber{
		opts:  opts,
		sink:  sink,
		log:   opts.Logger,
		now:   opts.Now,
		check: make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.m, err = subNewMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	s.setPhase(subPhaseStream)
	return s, nil
}

// NotReady says why the denylist cannot be trusted yet, or "" once the
// start-up replay is complete. It stays "" afterwards, through
// disconnections (see Unavailable).
func (s *Subscriber) NotReady() string {
	if s.ready.Load() {
		return ""
	}
	s.mu.Lock()
	connected, connErr := s.connected, s.lastConnErr
	s.mu.Unlock()
	if !connected {
		if connErr != "" {
			return subPhaseConnecting + ": " + connErr
		}
		return subPhaseConnecting
	}
	p := s.phase.Load()
	if *p == subPhaseReplay {
		return fmt.Sprintf("%s %d/%d", subPhaseReplay, s.last.Load(), s.target.Load())
	}
	return *p
}

// Unavailable reports whether requests should be denied because the feed
// is down: only with DenyAfter > 0, once NATS has been unreachable (or the
// stream unusable, or never reached) for longer than DenyAfter. It is one
// atomic load.
func (s *Subscriber) Unavailable() bool {
	return s.unavailable.Load()
}

// LastSequence is the last stream sequence handled.
func (s *Subscriber) LastSequence() uint64 {
	return s.last.Load()
}

func (s *Subscriber) setPhase(p string) {
	s.phase.Store(&p)
}

// Run connects, makes sure of the stream, replays it, and follows it until
// ctx ends; then it drains the connection and returns nil. It returns an
// error only when it cannot start (a configuration the server refuses).
// Stream problems (absent, not capturing the subject, JetStream off) are
// retried with backoff, reported by NotReady and logged when they change.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("revocation: Subscriber.Run called twice")
	}
	s.began = s.now()
	s.mu.Lock()
	s.armDenyTimer()
	s.mu.Unlock()
	defer s.stop()

	closed := make(chan struct{})
	nc, err := Connect(s.opts.NATS, s.log,
		nats.ConnectHandler(func(nc *nats.Conn) {
			s.log.Info("revocation: connected to NATS", "server", nc.ConnectedUrlRedacted())
			s.setConnected(true)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("revocation: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			s.setConnected(true)
			s.requestCheck()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("revocation: disconnected from NATS", "error", err)
			}
			s.setConnected(false)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			s.noteConnErr(err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			s.setConnected(false)
			close(closed)
		}),
	)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("revocation: %w", err)
	}
	err = s.follow(ctx, nc, js, closed)
	s.drain(nc, closed)
	return err
}

// follow runs consumer sessions until ctx ends. A session ends when its
// stream cannot be used; the next one starts after a backoff.
func (s *Subscriber) follow(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, closed <-chan struct{}) error {
	var (
		created time.Time // of the stream followed so far
		wait    = subRetryMin
		logged  string
	)
	for {
		if err := s.waitConnected(ctx, nc, closed); err != nil || ctx.Err() != nil {
			return err
		}
		err := s.session(ctx, js, &created)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errSubNewStream) {
			wait = subRetryMin
			continue
		}
		if msg := err.Error(); msg != logged {
			s.log.Error("revocation: cannot follow the stream; retrying", "error", err)
			logged = msg
		}
		if !s.ready.Load() {
			s.setPhase(err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return errSubClosed
		case <-time.After(wait):
		}
		wait = min(wait*2, subRetryMax)
	}
}

var (
	errSubClosed    = errors.New("revocation: the NATS connection was closed")
	errSubNewStream = errors.New("revocation: the stream was replaced")
)

// waitConnected returns once nc is connected, or ctx ends (nil), or the
// connection is closed.
func (s *Subscriber) waitConnected(ctx context.Context, nc *nats.Conn, closed <-chan struct{}) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return errSubClosed
		case <-tick.C:
		}
	}
	return nil
}

// session follows the stream with one ordered consumer until ctx ends
// (nil) or the stream goes away (an error).
func (s *Subscriber) session(ctx context.Context, js jetstream.JetStream, created *time.Time) error {
	callCtx, cancel := context.WithTimeout(ctx, subCallTimeout)
	stream, err := EnsureStream(callCtx, js, s.opts.NATS)
	cancel()
	if err != nil {
		return err
	}
	info := stream.CachedInfo()
	last := s.last.Load()
	if last > 0 && (!created.IsZero() && !info.Created.Equal(*created) || info.State.LastSeq < last) {
		// Deleted and created again (or a NATS server that lost its
		// store): its sequences start over. Replay all of it; the sink
		// keeps what it holds, so nothing is lifted.
		s.log.Warn("revocation: the stream was replaced; replaying it from the start",
			"stream", s.opts.NATS.Stream, "last_sequence", last, "stream_last_sequence", info.State.LastSeq)
		s.storeLast(0)
		last = 0
	}
	*created = info.Created
	if want := s.opts.NATS.MaxAge; want > 0 && info.Config.MaxAge > 0 && info.Config.MaxAge < want {
		s.log.Warn("revocation: the stream keeps events for less than the configured max_age; if tokens live longer, a sidegate started later may admit revoked tokens",
			"stream", s.opts.NATS.Stream, "stream_max_age", info.Config.MaxAge, "max_age", want)
	}
	if !s.ready.Load() {
		s.target.Store(info.State.LastSeq)
		s.setPhase(subPhaseReplay)
		if last >= info.State.LastSeq {
			s.markReady()
		}
	}

	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.opts.NATS.Subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	callCtx, cancel = context.WithTimeout(ctx, subCallTimeout)
	cons, err := stream.OrderedConsumer(callCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("revocation: consumer on stream %q: %w", s.opts.NATS.Stream, err)
	}
	cc, err := cons.Consume(s.handle, jetstream.ConsumeErrHandler(s.consumeError))
	if err != nil {
		return fmt.Errorf("revocation: consume stream %q: %w", s.opts.NATS.Stream, err)
	}
	defer cc.Stop()
	s.setConsuming(true)
	defer s.setConsuming(false)
	if !s.ready.Load() && cons.CachedInfo().NumPending == 0 {
		// Nothing of our subject to replay (the stream holds only other
		// subjects, or its last messages have just aged out).
		s.markReadyIfCaughtUp(cons.CachedInfo())
	}

	var replay <-chan time.Time
	if !s.ready.Load() {
		t := time.NewTicker(subReplayCheck)
		defer t.Stop()
		replay = t.C
	}
	var recheck <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-replay:
			if s.ready.Load() {
				replay = nil
				continue
			}
			callCtx, cancel := context.WithTimeout(ctx, subCallTimeout)
			ci, err := cons.Info(callCtx)
			cancel()
			if err == nil {
				s.markReadyIfCaughtUp(ci)
			}
			continue
		case <-s.check:
		case <-recheck:
		}
		recheck = nil
		// Does the stream we follow still exist, and is it the same one?
		callCtx, cancel := context.WithTimeout(ctx, subCallTimeout)
		now, err := stream.Info(callCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("revocation: stream %q disappeared", s.opts.NATS.Stream)
		case err != nil:
			// No answer yet (JetStream still starting after a restart):
			// ask again shortly.
			recheck = time.After(subRetryMin)
		case !now.Created.Equal(*created) || now.State.LastSeq < s.last.Load():
			return errSubNewStream
		}
	}
}

// markReadyIfCaughtUp ends the replay when the server has nothing more to
// deliver and everything it delivered has been handled.
func (s *Subscriber) markReadyIfCaughtUp(ci *jetstream.ConsumerInfo) {
	if ci == nil || ci.NumPending != 0 {
		return
	}
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	if ci.Delivered.Stream <= s.last.Load() && !s.ready.Load() {
		s.markReady()
	}
}

func (s *Subscriber) markReady() {
	s.ready.Store(true)
	s.setPhase("")
	s.log.Info("revocation: replay complete, following live",
		"stream", s.opts.NATS.Stream, "last_sequence", s.last.Load(), "took", s.now().Sub(s.began).Round(time.Millisecond))
}

// consumeError hears the consumer's troubles. The ordered consumer
// recreates itself; a deleted consumer may mean a deleted stream, which
// the session checks.
func (s *Subscriber) consumeError(_ jetstream.ConsumeContext, err error) {
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrStreamNotFound):
		s.log.Warn("revocation: consumer lost", "error", err)
		s.requestCheck()
	case errors.Is(err, jetstream.ErrServerShutdown):
		s.log.Info("revocation: the NATS server is shutting down", "error", err)
	case errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		s.log.Debug("revocation: consumer interrupted", "error", err)
	default:
		s.log.Warn("revocation: consumer error", "error", err)
	}
}

func (s *Subscriber) requestCheck() {
	select {
	case s.check <- struct{}{}:
	default:
	}
}

// handle applies one message. Nothing in it can stop the feed or crash
// the process: an event that does not parse, or that makes the sink
// panic, is counted, logged once by sequence (never by content), and
// skipped.
func (s *Subscriber) handle(msg jetstream.Msg) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	meta, err := msg.Metadata()
	if err != nil {
		s.log.Warn("revocation: message without JetStream metadata skipped", "error", err)
		return
	}
	seq := meta.Sequence.Stream
	if seq <= s.last.Load() {
		return // handled before a reconnect
	}
	defer func() {
		if r := recover(); r != nil {
			s.m.invalid.Inc()
			s.log.Error("revocation: event skipped: applying it panicked", "stream_sequence", seq, "panic", fmt.Sprint(r))
			s.finish(seq, meta.NumPending)
		}
	}()
	ev, err := ParseEvent(msg.Data())
	switch {
	case err != nil:
		s.m.invalid.Inc()
		s.log.Warn("revocation: invalid event skipped", "stream_sequence", seq, "error", err)
	case s.sink.Apply(ev):
		s.m.applied.Inc()
	default:
		s.m.unchanged.Inc()
	}
	if err == nil && s.ready.Load() {
		// Live events only: a replayed event's age is not a delay.
		s.m.lag.Observe(max(s.now().Sub(meta.Timestamp), 0).Seconds())
	}
	s.finish(seq, meta.NumPending)
}

// finish records seq as handled. Called with handleMu held.
func (s *Subscriber) finish(seq, pending uint64) {
	s.storeLast(seq)
	if !s.ready.Load() && (seq >= s.target.Load() || pending == 0) {
		s.markReady()
	}
}

func (s *Subscriber) storeLast(seq uint64) {
	s.last.Store(seq)
	s.m.lastSeq.Set(float64(seq))
}

// noteConnErr logs a failed connection attempt when its error differs
// from the previous one, so that an outage is one line, not one a second.
func (s *Subscriber) noteConnErr(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	same := err.Error() == s.lastConnErr
	s.lastConnErr = err.Error()
	s.mu.Unlock()
	if !same {
		s.log.Warn("revocation: cannot reach NATS; retrying", "error", err)
	}
}

func (s *Subscriber) setConnected(c bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = c
	if c {
		s.lastConnErr = ""
		s.m.connected.Set(1)
	} else {
		s.m.connected.Set(0)
	}
	s.updateLink()
}

func (s *Subscriber) setConsuming(c bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consuming = c
	s.updateLink()
}

// updateLink moves between up and down. Called with mu held.
func (s *Subscriber) updateLink() {
	up := s.connected && s.consuming
	if up == s.up || s.stopped {
		return
	}
	s.up = up
	s.epoch++
	if up {
		if s.denyTimer != nil {
			s.denyTimer.Stop()
		}
		if s.unavailable.Swap(false) {
			s.log.Info("revocation: feed is back; no longer denying every request")
		}
		return
	}
	s.armDenyTimer()
}

// armDenyTimer makes Unavailable true after DenyAfter unless the feed
// comes back first. Called with mu held.
func (s *Subscriber) armDenyTimer() {
	if s.opts.DenyAfter <= 0 {
		return
	}
	if s.denyTimer != nil {
		s.denyTimer.Stop()
	}
	epoch := s.epoch
	s.denyTimer = time.AfterFunc(s.opts.DenyAfter, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.epoch != epoch || s.up || s.stopped {
			return
		}
		s.unavailable.Store(true)
		s.log.Error("revocation: feed down for longer than on_disconnect.deny_after; denying every request", "deny_after", s.opts.DenyAfter)
	})
}

// stop freezes the link state at the end of Run.
func (s *Subscriber) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.denyTimer != nil {
		s.denyTimer.Stop()
	}
}

// drain lets in-flight messages finish and closes the connection.
func (s *Subscriber) drain(nc *nats.Conn, closed <-chan struct{}) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(subDrainTimeout):
		nc.Close()
	}
}

// subMetrics are the subscriber's metrics.
type subMetrics struct {
	applied, unchanged, invalid prometheus.Counter
	lag                         prometheus.Histogram
	connected, lastSeq          prometheus.Gauge
}

func subNewMetrics(reg prometheus.Registerer) (subMetrics, error) {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidegate_revocation_events_total",
		Help: "Revocation events read from the stream, by outcome: applied, unchanged (already held), invalid (skipped).",
	}, []string{"outcome"})
	m := subMetrics{
		applied:   events.WithLabelValues(subOutcomeApply),
		unchanged: events.WithLabelValues(subOutcomeSame),
		invalid:   events.WithLabelValues(subOutcomeBad),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sidegate_revocation_lag_seconds",
			Help:    "Time from a live revocation event's storage in JetStream to its application to the denylist.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidegate_revocation_connected",
			Help: "1 while connected to NATS, else 0.",
		}),
		lastSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidegate_revocation_last_sequence",
			Help: "Stream sequence of the last revocation event handled.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{events, m.lag, m.connected, m.lastSeq} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("revocation: metrics: %w", err)
			}
		}
	}
	return m, nil
}
