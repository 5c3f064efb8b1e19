package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// ejabberdctl's per-host account data commands (virtual hosts): each takes
// the host where ejabberdctl does; xmppd refuses a domain it does not serve
// ("unknown host", exit 1). Output as ejabberdctl prints it, for scripts.

func init() {
	register(Command{"ban_account", "USER HOST REASON", "ban an account as ejabberdctl does: a random password replaces its own, its sessions are kicked with the reason", 3, 3}, nil)
	register(Command{"num_resources", "USER HOST", "number of the account's sessions (resources)", 2, 2}, nil)
	register(Command{"get_offline_count", "USER HOST", "number of offline messages stored for the account", 2, 2}, nil)
	register(Command{"get_roster", "USER HOST", "the account's roster, one contact per line: JID, nick, subscription, ask, groups (;-separated), tab-separated", 2, 2}, renderRoster)
	register(Command{"add_rosteritem", "LOCALUSER LOCALHOST USER HOST NICK GROUP SUBS", "add or replace a roster item (GROUP: g1;g2, SUBS: none|to|from|both); pushed to the user's clients, no presence sent", 7, 7}, nil)
	register(Command{"delete_rosteritem", "LOCALUSER LOCALHOST USER HOST", "remove a roster item (pushed to the user's clients)", 4, 4}, nil)
	register(Command{"get_vcard", "USER HOST NAME", "one field of the account's vCard (FN, NICKNAME, URL, ...)", 3, 3}, nil)
	register(Command{"get_vcard2", "USER HOST NAME SUBNAME", "one subfield of the account's vCard (N FAMILY, EMAIL USERID, ORG ORGNAME, ...)", 4, 4}, nil)
	register(Command{"set_vcard", "USER HOST NAME CONTENT", "set one field of the account's vCard", 4, 4}, nil)
	register(Command{"set_vcard2", "USER HOST NAME SUBNAME CONTENT", "set one subfield of the account's vCard", 5, 5}, nil)
	register(Command{"set_nickname", "USER HOST NICKNAME", "set the account's vCard NICKNAME", 3, 3}, nil)
	register(Command{"send_message", "TYPE FROM TO SUBJECT BODY", "send a message (TYPE chat|normal|headline|groupchat) from a JID of a served host", 5, 5}, nil)
	register(Command{"create_room", "NAME SERVICE HOST [OWNER]", "create a persistent MUC room at HOST's service (conference.HOST or its muc_domain), OWNER (a bare JID) its owner", 3, 4}, nil)
	register(Command{"destroy_room", "NAME SERVICE", "destroy a MUC room; its occupants are told", 2, 2}, nil)
	// ejabberdctl's spelling of the XEP-0227 commands.
	registerClient(Command{"import_piefxis", "FILE", "ejabberdctl form of import-piefxis", 1, 1}, follow("import-piefxis"))
	registerClient(Command{"export_piefxis", "DIR", "ejabberdctl form of export-piefxis (a main file and one file per host)", 1, 1}, follow("export-piefxis"))
	registerClient(Command{"export_piefxis_host", "DIR HOST", "export one host's accounts and data (a main file including that host's file)", 2, 2},
		func(ctx context.Context, socket string, args []string, asJSON bool, stdout, stderr io.Writer) int {
			return piefxisRun(ctx, socket, "export-piefxis", args[0], args[1:], asJSON, stdout, stderr)
		})

	details["ban_account"] = "ejabberdctl ban_account USER HOST REASON: the account keeps its data; xmppctl change_password gives it a password again.\n" +
		"Not possible where the host's auth backend manages passwords elsewhere (sql, ldap): the error says so."
	details["get_roster"] = "  xmppctl get_roster alice b.example\n  bob@c.example\tBob\tboth\tnone\tfriends;work"
	details["add_rosteritem"] = "  xmppctl add_rosteritem alice b.example bob c.example Bob 'friends;work' both\n" +
		"LOCALHOST must be a served domain; the contact (USER@HOST) may be anywhere. As ejabberd's command, no subscription\n" +
		"presence is sent to the contact: give the contact's side with a second add_rosteritem when it is local."
	details["send_message"] = "  xmppctl send_message headline b.example alice@b.example Notice 'maintenance at 22:00'\n" +
		"FROM's domain must be served here (a host, or a user of one); TO may be anywhere."
	details["create_room"] = "  xmppctl create_room ops conference.b.example b.example alice@b.example\nSERVICE must be HOST's MUC service (xmppctl vhosts lists them). The room is persistent and unlocked; OWNER\n(xmppctl's addition to ejabberdctl's form) gets the owner affiliation and configures it from a client."
}

// renderRoster prints get_roster as ejabberdctl does: one contact per line,
// tab-separated.
func renderRoster(w io.Writer, _ []string, v any) error {
	for _, it := range asMaps(v) {
		var groups []string
		for _, g := range asList(it["groups"]) {
			groups = append(groups, fmt.Sprint(g))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", it["jid"], it["nick"], it["subscription"], it["ask"], strings.Join(groups, ";"))
	}
	return nil
}
