package config

// VIPConfig holds the settings of edge networking: the VIP pool, the firewall, DHCP.
// Its flags, defaults and checks register themselves in init (registerFeature).
type VIPConfig struct{}
