package jwks

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	refreshes  *prometheus.CounterVec
	unknownKid *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, c *Cache) (*metrics, error) {
	m := &metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidegate_jwks_refresh_total",
			Help: "JWKS fetches per issuer, by outcome (success, error).",
		}, []string{"issuer", "outcome"}),
		unknownKid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidegate_jwks_unknown_kid_total",
			Help: "Lookups of a kid missing from the issuer's key set, by outcome: found (after a refetch), not_found (after a refetch), timeout (the refetch outlasted kid_wait), rate_limited, remembered (recently not found).",
		}, []string{"issuer", "outcome"}),
	}
	keys := prometheus.NewDesc("sidegate_jwks_keys", "Usable keys in the issuer's current key set (0 when it has none).", []string{"issuer"}, nil)
	last := prometheus.NewDesc("sidegate_jwks_last_success_timestamp_seconds", "Unix time of the issuer's last successful JWKS fetch (absent before the first).", []string{"issuer"}, nil)
	collectors := []prometheus.Collector{m.refreshes, m.unknownKid, setCollector{c: c, keys: keys, last: last}}
	for _, col := range collectors {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// zero makes an issuer's counters show up at zero before its first fetch.
//
// Counters are never deleted, not even when SetIssuers removes the issuer:
// one that vanished and came back at zero when the issuer is configured
// again would read as a reset, and a fetch or lookup still under way could
// bring a deleted series back half-counted. Their number is bounded by the
// issuers ever configured in the process. The gauges below describe the
// current configuration only.
func (m *metrics) zero(iss string) {
	m.refreshes.WithLabelValues(iss, "success")
	m.refreshes.WithLabelValues(iss, "error")
	for _, o := range []string{"found", "not_found", "timeout", "rate_limited", "remembered"} {
		m.unknownKid.WithLabelValues(iss, o)
	}
}

// setCollector reads key counts and ages straight from the snapshots, so the
// gauges can never disagree with what the request path sees, and an issuer
// that SetIssuers removed has no gauge series.
type setCollector struct {
	c          *Cache
	keys, last *prometheus.Desc
}

func (s setCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.keys
	ch <- s.last
}

func (s setCollector) Collect(ch chan<- prometheus.Metric) {
	for _, is := range s.c.issuers.Load().order {
		name, set := is.cfg.Issuer, is.set.Load()
		n := 0
		if set != nil {
			n = len(set.Keys)
			ch <- prometheus.MustNewConstMetric(s.last, prometheus.GaugeValue, float64(set.FetchedAt.UnixNano())/1e9, name)
		}
		ch <- prometheus.MustNewConstMetric(s.keys, prometheus.GaugeValue, float64(n), name)
	}
}
