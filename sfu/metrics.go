package sfu

import "github.com/prometheus/client_golang/prometheus"

var (
	descRooms        = prometheus.NewDesc("sluice_rooms", "Open rooms.", nil, nil)
	descParticipants = prometheus.NewDesc("sluice_participants", "Participants in rooms.", nil, nil)
	descTracks       = prometheus.NewDesc("sluice_tracks", "Published tracks.", []string{"kind"}, nil)
	descSubs         = prometheus.NewDesc("sluice_subscriptions", "Track subscriptions (viewers and egress).", nil, nil)
	descPacketsIn    = prometheus.NewDesc("sluice_packets_in_total", "RTP packets written by publishers.", nil, nil)
	descBytesIn      = prometheus.NewDesc("sluice_bytes_in_total", "RTP bytes written by publishers.", nil, nil)
	descPacketsOut   = prometheus.NewDesc("sluice_packets_out_total", "RTP packets delivered to subscribers.", nil, nil)
	descBytesOut     = prometheus.NewDesc("sluice_bytes_out_total", "RTP bytes delivered to subscribers.", nil, nil)
	descDropped      = prometheus.NewDesc("sluice_packets_dropped_total", "Packets dropped because a subscriber's queue was full.", nil, nil)
	descMemUsed      = prometheus.NewDesc("sluice_memory_used_bytes", "Memory the daemon used at the last sample (with a memory budget).", nil, nil)
	descMemBudget    = prometheus.NewDesc("sluice_memory_budget_bytes", "The memory budget (limits.memory_mb; 0: none).", nil, nil)
	descMemRefused   = prometheus.NewDesc("sluice_memory_refusals_total", "Sessions refused because memory was over its high-water mark.", nil, nil)
	descKeyframes    = prometheus.NewDesc("sluice_keyframe_requests_total", "Keyframe requests forwarded to publishers.", nil, nil)
)

// Describe implements prometheus.Collector.
func (h *Hub) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRooms, descParticipants, descTracks, descSubs, descPacketsIn,
		descBytesIn, descPacketsOut, descBytesOut, descDropped, descKeyframes, descMemUsed, descMemBudget, descMemRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: live objects' counters plus the totals of ended ones,
// read at scrape time so the packet path pays nothing for metrics.
func (h *Hub) Collect(ch chan<- prometheus.Metric) {
	var rooms, participants, subs int
	tracks := map[Kind]int{KindAudio: 0, KindVideo: 0}
	pin := h.retired.packetsIn.Load()
	bin := h.retired.bytesIn.Load()
	pout := h.retired.packetsOut.Load()
	bout := h.retired.bytesOut.Load()
	drop := h.retired.dropped.Load()
	kf := h.retired.keyframeRequests.Load()
	for _, r := range h.Rooms() {
		rooms++
		for _, p := range r.Participants() {
			participants++
			for _, t := range p.Tracks() {
				tracks[t.kind]++
				pin += t.packets.Load()
				bin += t.bytes.Load()
				kf += t.kfRequests.Load()
				// Subscriptions to derived (transcoded) tracks are deliveries too; the packets a
				// transcoder writes are not publishers' packets_in.
				for _, tr := range append([]*Track{t}, t.Derived()...) {
					for _, s := range tr.Subscriptions() {
						subs++
						pout += s.delivered.Load()
						bout += s.bytesOut.Load()
						drop += s.dropped.Load()
					}
				}
			}
		}
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descRooms, rooms)
	gauge(descParticipants, participants)
	for k, n := range tracks {
		gauge(descTracks, n, string(k))
	}
	gauge(descSubs, subs)
	counter(descPacketsIn, pin)
	counter(descBytesIn, bin)
	counter(descPacketsOut, pout)
	counter(descBytesOut, bout)
	counter(descDropped, drop)
	counter(descKeyframes, kf)
	used, budget, _ := h.MemoryUsage()
	refused, _ := h.Refusals()
	ch <- prometheus.MustNewConstMetric(descMemUsed, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(descMemBudget, prometheus.GaugeValue, float64(budget))
	counter(descMemRefused, refused)
}

// retireTrack adds an ended track's counters to the totals.
func (h *Hub) retireTrack(t *Track) {
	h.retired.packetsIn.Add(t.packets.Load())
	h.retired.bytesIn.Add(t.bytes.Load())
	h.retired.keyframeRequests.Add(t.kfRequests.Load())
}

// retireSubscription adds an ended subscription's counters to the totals.
func (h *Hub) retireSubscription(s *Subscription) {
	h.retired.packetsOut.Add(s.delivered.Load())
	h.retired.bytesOut.Add(s.bytesOut.Load())
	h.retired.dropped.Add(s.dropped.Load())
}
