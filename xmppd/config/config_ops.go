package config

// OpsConfig holds the settings of operations: the HTTP listener, Prometheus metrics, the web admin page.
// Its flags, defaults and checks register themselves in init (registerFeature).
type OpsConfig struct{}
