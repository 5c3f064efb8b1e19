package bench

import (
	"testing"

	"gopkg.in/yaml.v3"
)

// The ejabberd template stays valid YAML with and without the SQLite lines the
// harness fills in, and mod_mam's backend follows them.
func TestEjabberdTemplateFills(t *testing.T) {
	for _, c := range []struct{ sql, db string }{
		{"sql_type: sqlite\nsql_database: \"/x/spool/ejabberd.db\"", "sql"},
		{"", "mnesia"},
	} {
		out := Fill(EjabberdYML, map[string]string{"DOMAIN": "localhost", "PORT": "5222", "CERTKEY": "/x/c.pem", "SQL": c.sql, "MAMDB": c.db})
		var cfg struct {
			SQLType string `yaml:"sql_type"`
			Modules map[string]map[string]any
		}
		if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatalf("%s: %v\n%s", c.db, err, out)
		}
		if got := cfg.Modules["mod_mam"]["db_type"]; got != c.db {
			t.Errorf("mod_mam db_type %v, want %s", got, c.db)
		}
		if (cfg.SQLType == "sqlite") != (c.db == "sql") {
			t.Errorf("sql_type %q with db_type %s", cfg.SQLType, c.db)
		}
	}
}
