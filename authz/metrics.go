package authz

import (
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
	counts    map[string]prometheus.Counter      // reason code → its one series
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
			Help: "Decisions by outcome (allow, deny) and reason code.",
		}, []string{"decision", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.decisions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Start every series at zero so that rate() and alerts see them at once.
	m.durations = make(map[string]*[2]prometheus.Observer)
	m.counts = make(map[string]prometheus.Counter)
	for _, r := range Reasons() {
		m.counts[r.Code] = m.decisions.WithLabelValues(decisionLabel(r == ReasonOK), r.Code)
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
	if c, ok := m.counts[d.Reason.Code]; ok && d.Allowed == (d.Reason == ReasonOK) {
		c.Inc()
	} else {
		m.decisions.WithLabelValues(decisionLabel(d.Allowed), d.Reason.Code).Inc()
	}
}
