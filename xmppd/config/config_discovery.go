package config

// DiscoveryConfig holds the settings of peer discovery and auto-join: Serf membership, subnet scan, reverse DNS, static and DNS SRV seeds.
// Its flags, defaults and checks register themselves in init (registerFeature).
type DiscoveryConfig struct{}
