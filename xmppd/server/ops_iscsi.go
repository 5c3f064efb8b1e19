package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"xedge/iscsi"
)

// iSCSI metrics: every iSCSI device this process has open (the store's LUN),
// from the initiator's own counters, read at scrape time.

type iscsiCollector struct{}

var (
	iscsiLabels   = []string{"target", "lun"}
	descISCSIUp   = prometheus.NewDesc("xmppd_iscsi_connected", "1 if the iSCSI session to the LUN is logged in.", iscsiLabels, nil)
	descISCSILog  = prometheus.NewDesc("xmppd_iscsi_logins_total", "Logins to the iSCSI target (the first and every re-login).", iscsiLabels, nil)
	descISCSILost = prometheus.NewDesc("xmppd_iscsi_losses_total", "iSCSI connections lost.", iscsiLabels, nil)
	descISCSICmds = prometheus.NewDesc("xmppd_iscsi_commands_total", "SCSI commands completed.", iscsiLabels, nil)
	descISCSIErrs = prometheus.NewDesc("xmppd_iscsi_command_errors_total", "SCSI commands that failed after retries, or were refused while the connection to the target was lost.", iscsiLabels, nil)
	descISCSILat  = prometheus.NewDesc("xmppd_iscsi_command_latency_seconds", "SCSI command latency (reads, writes, cache flushes).", iscsiLabels, nil)
)

func (iscsiCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: one series set per open device

func (iscsiCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range iscsi.Devices() {
		iqn, lun := d.Target()
		l := []string{iqn, fmt.Sprint(lun)}
		st, io := d.Stats(), d.IOStats()
		ch <- prometheus.MustNewConstMetric(descISCSIUp, prometheus.GaugeValue, boolf(d.State() == iscsi.StateConnected), l...)
		ch <- prometheus.MustNewConstMetric(descISCSILog, prometheus.CounterValue, float64(st.Logins), l...)
		ch <- prometheus.MustNewConstMetric(descISCSILost, prometheus.CounterValue, float64(st.Losses), l...)
		ch <- prometheus.MustNewConstMetric(descISCSICmds, prometheus.CounterValue, float64(io.Commands), l...)
		ch <- prometheus.MustNewConstMetric(descISCSIErrs, prometheus.CounterValue, float64(io.Errors), l...)
		buckets := make(map[float64]uint64, len(iscsi.LatencyBounds))
		for i, b := range iscsi.LatencyBounds {
			buckets[b] = io.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(descISCSILat, io.Commands, io.LatencySum, buckets, l...)
	}
}
