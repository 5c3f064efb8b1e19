package iscsi

import (
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds, in seconds, of the buckets of the SCSI
// command latency histogram in IOStats (Prometheus-style, cumulative).
var LatencyBounds = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5}

// IOStats are the device's SCSI command counters since it was made: for
// metrics (xmppd exports them as xmppd_iscsi_*).
type IOStats struct {
	Commands uint64 `json:"commands"` // commands completed, including failed ones
	// Errors counts commands that failed after retries (connection lost, SCSI
	// error) and commands refused because the connection was lost (those are
	// not in Commands: they never reached the target).
	Errors uint64 `json:"errors"`
	// LatencySum is the total time of the completed commands in seconds;
	// Buckets[i] counts those that took at most LatencyBounds[i] (cumulative).
	LatencySum float64  `json:"latency_sum_seconds"`
	Buckets    []uint64 `json:"latency_buckets"`
}

type ioStats struct {
	cmds, errs, nanos atomic.Uint64
	buckets           [16]atomic.Uint64 // len(LatencyBounds) used
}

func (s *ioStats) observe(d time.Duration, failed bool) {
	s.cmds.Add(1)
	if failed {
		s.errs.Add(1)
	}
	s.nanos.Add(uint64(d))
	sec := d.Seconds()
	for i, b := range LatencyBounds {
		if sec <= b {
			s.buckets[i].Add(1)
			break
		}
	}
}

// IOStats returns the command counters and latency histogram.
func (d *Device) IOStats() IOStats {
	s := &d.io
	out := IOStats{Commands: s.cmds.Load(), Errors: s.errs.Load(), LatencySum: float64(s.nanos.Load()) / 1e9,
		Buckets: make([]uint64, len(LatencyBounds))}
	var cum uint64
	for i := range LatencyBounds {
		cum += s.buckets[i].Load()
		out.Buckets[i] = cum
	}
	return out
}

// Target returns the IQN and LUN the device reaches.
func (d *Device) Target() (iqn string, lun uint64) { return d.cfg.Target, d.cfg.LUN }

// devices are the devices not yet closed, for Devices.
var devices sync.Map // *Device -> struct{}

// Devices returns the devices of this process that are not closed (for
// metrics: the process that made a device need not hand it around).
func Devices() []*Device {
	var out []*Device
	devices.Range(func(k, _ any) bool {
		out = append(out, k.(*Device))
		return true
	})
	return out
}
