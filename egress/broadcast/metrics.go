package broadcast

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descBroadcasts   = prometheus.NewDesc("sluice_broadcasts", "Running broadcasts by status (starting, active, ending).", []string{"status"}, nil)
	descDestinations = prometheus.NewDesc("sluice_broadcast_destinations", "Destinations of running broadcasts by status.", []string{"status"}, nil)
	descBytes        = prometheus.NewDesc("sluice_broadcast_sent_bytes", "Bytes sent so far by the running broadcasts.", nil, nil)
	descReconnects   = prometheus.NewDesc("sluice_broadcast_reconnects", "Reconnections so far of the running broadcasts.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBroadcasts
	ch <- descDestinations
	ch <- descBytes
	ch <- descReconnects
}

// Collect implements prometheus.Collector from the broadcasts that have not ended.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	running := map[string]int{StatusStarting: 0, StatusActive: 0, StatusEnding: 0}
	dests := map[string]int{}
	var bytes int64
	var reconnects int
	for _, b := range m.List() {
		if _, ok := running[b.Status]; !ok {
			continue // ended: complete or failed
		}
		running[b.Status]++
		bytes += b.BytesSent
		reconnects += b.Reconnects
		for _, d := range b.Destinations {
			dests[d.Status]++
		}
	}
	for s, n := range running {
		ch <- prometheus.MustNewConstMetric(descBroadcasts, prometheus.GaugeValue, float64(n), s)
	}
	for s, n := range dests {
		ch <- prometheus.MustNewConstMetric(descDestinations, prometheus.GaugeValue, float64(n), s)
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.GaugeValue, float64(reconnects))
}
