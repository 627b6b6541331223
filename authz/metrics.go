package authz

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the decision metrics shared by both adapters.
type Metrics struct {
	duration  *prometheus.HistogramVec
	decisions *prometheus.CounterVec
	// The series themselves, looked up once: WithLabelValues hashes its
	// labels on every call.
	durations map[string]*[2]prometheus.Observer // transport → [deny, allow]
	counts    sync.Map                           // decisionKey → prometheus.Counter
}

// decisionKey is one series of sidegate_decisions_total.
type decisionKey struct {
	route, reason string
	deny, shadow  bool
}

// Transports label sidegate_check_duration_seconds.
const (
	TransportGRPC = "grpc"
	TransportHTTP = "http"
)

// NewMetrics registers the decision metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sidegate_check_duration_seconds",
			Help: "Time to answer one check, from request decoded to response built.",
			// 50µs to 100ms: a cached answer sits in the first buckets, a
			// cold RSA verification around 0.1ms, anything past 10ms is trouble.
			Buckets:                         []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"transport", "decision"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidegate_decisions_total",
			Help: "Decisions by outcome (allow, deny), reason code, route, and whether the outcome was enforced (false: a shadow route or a CSRF report, allowed whatever the decision).",
		}, []string{"decision", "reason", "route", "enforced"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.decisions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Start every series at zero so that rate() and alerts see them at once.
	m.durations = make(map[string]*[2]prometheus.Observer)
	m.InitRoutes([]string{defaultRouteName})
	// The denials a request no route could be chosen for gets.
	for _, r := range []string{"bad_path", "unknown_route"} {
		m.counter(decisionKey{route: unrouted, reason: r, deny: true})
	}
	for _, t := range []string{TransportGRPC, TransportHTTP} {
		m.durations[t] = &[2]prometheus.Observer{
			m.duration.WithLabelValues(t, "deny"),
			m.duration.WithLabelValues(t, "allow"),
		}
	}
	return m, nil
}

// StageMetrics is the opt-in per-stage histogram
// sidegate_check_stage_duration_seconds{stage="extract"|"verify"|"denylist"}.
type StageMetrics struct{ h *prometheus.HistogramVec }

// NewStageMetrics registers the stage histogram on reg.
func NewStageMetrics(reg prometheus.Registerer) (*StageMetrics, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:                            "sidegate_check_stage_duration_seconds",
		Help:                            "Time spent in each stage of a check (opt-in: metrics.stages).",
		Buckets:                         []float64{.000001, .000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .005, .01},
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"stage"})
	if err := reg.Register(h); err != nil {
		return nil, err
	}
	for _, st := range []string{"extract", "verify", "denylist"} {
		h.WithLabelValues(st)
	}
	return &StageMetrics{h: h}, nil
}

// Observe is the engine's stage observer (Engine.SetStageObserver).
func (m *StageMetrics) Observe(stage string, d time.Duration) {
	m.h.WithLabelValues(stage).Observe(d.Seconds())
}

func decisionLabel(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// InitRoutes starts the enforced series of every reason of these routes
// at zero, so that rate() and alerts see them at once. The daemon calls it
// with the routes of every configuration it loads.
func (m *Metrics) InitRoutes(routes []string) {
	for _, rt := range routes {
		for _, r := range Reasons() {
			m.counter(decisionKey{route: rt, reason: r.Code, deny: r != ReasonOK})
		}
	}
}

func (m *Metrics) counter(k decisionKey) prometheus.Counter {
	if c, ok := m.counts.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.decisions.WithLabelValues(decisionLabel(!k.deny), k.reason, k.route, strconv.FormatBool(!k.shadow))
	m.counts.Store(k, c)
	return c
}

func (m *Metrics) observe(transport string, d *Decision, elapsed time.Duration) {
	i := 0
	if d.Allowed {
		i = 1
	}
	if o, ok := m.durations[transport]; ok {
		o[i].Observe(elapsed.Seconds())
	} else {
		m.duration.WithLabelValues(transport, decisionLabel(d.Allowed)).Observe(elapsed.Seconds())
	}
	// A shadow decision is counted as the denial it would have been.
	m.counter(decisionKey{route: d.Route, reason: d.Reason.Code, deny: !d.Allowed || d.Shadow, shadow: d.Shadow}).Inc()
}
