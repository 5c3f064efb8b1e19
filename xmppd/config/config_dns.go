package config

// DNSConfig holds the settings of DNS publishing: the embedded authoritative server and RFC 2136 updates.
// Its flags, defaults and checks register themselves in init (registerFeature).
type DNSConfig struct{}
