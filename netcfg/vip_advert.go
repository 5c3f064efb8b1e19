package netcfg

import "time"

// AdvertStats describes this node's own adverts: how many went out and the
// longest gap between two of them (a stalled process or vCPU shows here first:
// a gap near a peer's dead interval is a false failover in the making).
type AdvertStats struct {
	Sent    uint64        `json:"sent"`
	Errors  uint64        `json:"errors,omitempty"`
	MaxGap  time.Duration `json:"max_gap"`
	LastGap time.Duration `json:"last_gap"`
}
