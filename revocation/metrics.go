package revocation

import "github.com/prometheus/client_golang/prometheus"

// denyCollector reads the entry counts straight from the denylist's current
// state, so the gauge can never disagree with what the request path sees.
type denyCollector struct {
	d       *Denylist
	entries *prometheus.Desc
}

func denyNewCollector(d *Denylist) denyCollector {
	return denyCollector{d: d, entries: prometheus.NewDesc(
		"sidegate_revocation_entries",
		"Revocations held in the denylist, by kind (jti, sub, kid); expired ones count until the next rebuild drops them.",
		[]string{"kind"}, nil)}
}

func (c denyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.entries }

func (c denyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range denyKindNames {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(c.d.Len(k)), string(k))
	}
}
