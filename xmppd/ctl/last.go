package ctl

import (
	"fmt"
	"io"
)

// ejabberdctl's last-activity commands (mod_admin_extra over mod_last):
// get_last prints ejabberd's "TIMESTAMP<TAB>STATUS"; delete_old_users(_vhost)
// prints ejabberd's "Deleted N users: [...]"; set_last prints nothing.

func init() {
	register(Command{"get_last", "USER HOST", "an account's last activity: timestamp and status (tab-separated; ONLINE with the current time while it has a session, NOT FOUND when no logout is recorded)", 2, 2}, renderLast)
	register(Command{"set_last", "USER HOST TIMESTAMP STATUS", "set an account's last activity record (TIMESTAMP: seconds since 1970-01-01 UTC)", 4, 4}, quiet)
	register(Command{"delete_old_users", "DAYS", "delete (as unregister, with their data) the accounts of every host offline and last seen more than DAYS days ago", 1, 1}, renderOldUsers)
	register(Command{"delete_old_users_vhost", "HOST DAYS", "delete_old_users for HOST's accounts only", 2, 2}, renderOldUsers)

	details["get_last"] = "  xmppctl get_last alice b.example\n  2026-12-06T21:58:03Z\tHeading home\n" +
		"The time of the last logout (UTC) and the status of its unavailable presence, as ejabberdctl prints them\n" +
		"(ONLINE and NOT FOUND come with the current time, in microseconds)."
	details["set_last"] = "  xmppctl set_last alice b.example 1764979200 'Gone fishing'\nPrints nothing (exit 0), as ejabberdctl."
	details["delete_old_users"] = "  xmppctl delete_old_users 365\n  Deleted 2 users: [bob@a.example, carol@b.example]\n" +
		"Never deletes an account with a session on any node. An account with no last-activity record (created or\n" +
		"imported before xmppd kept them, or never logged in since) is not deleted: it is dated now, and a later run\n" +
		"deletes it if it has not logged in DAYS days after that (ejabberd deletes those at once). --json also says how\n" +
		"many were dated."
	details["delete_old_users_vhost"] = "  xmppctl delete_old_users_vhost b.example 365\nAs delete_old_users, for one served host."
}

// renderLast prints get_last's result as ejabberdctl does.
func renderLast(w io.Writer, _ []string, v any) error {
	m, _ := v.(map[string]any)
	fmt.Fprintf(w, "%v\t%v\n", m["timestamp"], m["status"])
	return nil
}

// renderOldUsers prints delete_old_users' message.
func renderOldUsers(w io.Writer, _ []string, v any) error {
	m, _ := v.(map[string]any)
	fmt.Fprintln(w, m["message"])
	return nil
}
