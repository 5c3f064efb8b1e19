// Package bench holds the benchmark's server configurations (ejabberd, Prosody)
// and the tsung scenario as embedded templates, so the harness runs the same files
// the docs describe from any working directory. The harness itself lives in
// bench/cmd/bench, bench/loadgen, bench/servers and bench/workload.
package bench

import (
	_ "embed"
	"strings"
)

// EjabberdYML is bench/ejabberd/ejabberd.yml.
//
//go:embed ejabberd/ejabberd.yml
var EjabberdYML string

// ProsodyCfg is bench/prosody/prosody.cfg.lua.
//
//go:embed prosody/prosody.cfg.lua
var ProsodyCfg string

// XmppdYAML is bench/xmppd/xmppd.yaml.
//
//go:embed xmppd/xmppd.yaml
var XmppdYAML string

// TsungXML is bench/tsung/xmpp.xml.
//
//go:embed tsung/xmpp.xml
var TsungXML string

// Fill replaces every @KEY@ in tmpl with vars[KEY].
func Fill(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "@"+k+"@", v)
	}
	return tmpl
}
