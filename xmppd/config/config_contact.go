package config

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// ContactConfig holds the server's contact addresses (XEP-0157), published in
// its disco#info as a http://jabber.org/network/serverinfo form (XEP-0128),
// like Prosody's contact_info. Each setting is a list of URIs (mailto:,
// xmpp:, https:, tel:), comma-separated; in YAML also a list.
type ContactConfig struct {
	Abuse, Admin, Feedback, Sales, Security, Support string
}

// Addresses returns the configured addresses by XEP-0157 field var
// (abuse-addresses, admin-addresses, ...), only the kinds that have some.
func (c ContactConfig) Addresses() map[string][]string {
	out := map[string][]string{}
	for kind, v := range c.byKind() {
		if l := splitURIs(*v); len(l) > 0 {
			out[kind+"-addresses"] = l
		}
	}
	return out
}

func (c *ContactConfig) byKind() map[string]*string {
	return map[string]*string{"abuse": &c.Abuse, "admin": &c.Admin, "feedback": &c.Feedback,
		"sales": &c.Sales, "security": &c.Security, "support": &c.Support}
}

// splitURIs splits a list given as "a,b", "a b" or as the config loader prints a
// YAML list ("[a b]").
func splitURIs(s string) []string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

func init() {
	registerFeature(featureSettings{
		flags: func(c *Config, fs *flag.FlagSet) {
			for _, kind := range []string{"abuse", "admin", "feedback", "sales", "security", "support"} {
				p := c.Contact.byKind()[kind]
				fs.StringVar(p, "contact-"+kind, *p, "contact addresses (XEP-0157) for "+kind+": comma-separated URIs, e.g. mailto:"+kind+"@example.org,xmpp:"+kind+"@example.org")
			}
		},
		check: func(c *Config) []error {
			var errs []error
			for kind, v := range c.Contact.byKind() {
				for _, a := range splitURIs(*v) {
					if u, err := url.Parse(a); err != nil || u.Scheme == "" || (u.Opaque == "" && u.Host == "") {
						errs = append(errs, fmt.Errorf("contact-%s %q: want a URI such as mailto:%s@example.org or xmpp:%s@example.org", kind, a, kind, kind))
					}
				}
			}
			return errs
		},
	})
}
