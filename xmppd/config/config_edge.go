package config

// EdgeConfig holds the settings of edge networking: the VIP pool, DNS publishing (embedded server, RFC 2136), the firewall.
// Its flags, defaults and checks register themselves in init (registerFeature).
type EdgeConfig struct{}
