package config

// BusConfig holds the settings of inter-node stanza routing (the cluster bus).
// Its flags, defaults and checks register themselves in init (registerFeature).
type BusConfig struct{}
