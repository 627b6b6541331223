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
	// Every issuer shows up at zero before its first fetch.
	for _, name := range c.order {
		m.refreshes.WithLabelValues(name, "success")
		m.refreshes.WithLabelValues(name, "error")
		for _, o := range []string{"found", "not_found", "timeout", "rate_limited", "remembered"} {
			m.unknownKid.WithLabelValues(name, o)
		}
	}
	return m, nil
}

// setCollector reads key counts and ages straight from the snapshots, so the
// gauges can never disagree with what the request path sees.
type setCollector struct {
	c          *Cache
	keys, last *prometheus.Desc
}

func (s setCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.keys
	ch <- s.last
}

func (s setCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range s.c.order {
		set := s.c.issuers[name].set.Load()
		n := 0
		if set != nil {
			n = len(set.Keys)
			ch <- prometheus.MustNewConstMetric(s.last, prometheus.GaugeValue, float64(set.FetchedAt.UnixNano())/1e9, name)
		}
		ch <- prometheus.MustNewConstMetric(s.keys, prometheus.GaugeValue, float64(n), name)
	}
}
