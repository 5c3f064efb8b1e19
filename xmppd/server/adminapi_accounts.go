package server

import (
	"errors"
	"fmt"

	"xedge/xmppd/auth"
	"xedge/xmppd/module"
)

// The admin commands on accounts (register, unregister, passwd, users,
// check_account, check_password, stats registeredusers) act on the configured
// authentication backend (auth.go): the users table with auth-method internal,
// the script with external (isuser, auth, tryregister, setpass, removeuser; a
// script that does not implement one answers 0 and the command fails), while sql
// and ldap, whose accounts live in their directory, refuse writes and listing with
// an error naming the auth method.

// userDir returns where accounts are: the auth backend, or the users table.
func (s *Server) userDir() module.Accounts {
	if s.Router != nil {
		if a := s.Router.Accounts(); a != nil {
			return a
		}
	}
	return s.Accounts
}

// adminUser prepares a username (nodeprep) as every backend expects it.
func (s *Server) adminUser(user string) (string, error) {
	u, err := s.Accounts.Normalize(user)
	if err != nil {
		return "", fmt.Errorf("invalid username %q: %w", user, err)
	}
	return u, nil
}

// dirErr names the auth method in a "not supported by this backend" error.
func (s *Server) dirErr(what string, err error) error {
	if errors.Is(err, auth.ErrNotSupported) {
		return fmt.Errorf("%s is not possible with auth-method %s: its accounts are managed in its own directory (%w)", what, s.cfg.Auth.Method, err)
	}
	return err
}
