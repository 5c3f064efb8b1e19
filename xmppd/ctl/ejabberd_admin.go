package ctl

import (
	"fmt"
	"io"
)

// ejabberdctl's MUC room administration (mod_muc_admin), purges
// (delete_old_messages, delete_old_mam_messages), set_presence, private
// XML storage and shared roster groups (mod_admin_extra), with ejabberdctl's arguments and output: a
// command whose ejabberd result is a return code prints nothing and exits 0
// (1 with the reason on stderr when refused); lists print one tab-separated
// line per entry. --json shows what was done.

func init() {
	register(Command{"get_room_options", "NAME SERVICE", "a MUC room's options, one per line: name, value (tab-separated)", 2, 2}, renderFields("name", "value"))
	register(Command{"change_room_option", "NAME SERVICE OPTION VALUE", "change one option of a MUC room (title, description, public, persistent, members_only, moderated, password, ...; booleans true|false)", 4, 4}, quiet)
	register(Command{"set_room_affiliation", "NAME SERVICE JID AFFILIATION", "set a JID's affiliation in a MUC room (owner|admin|member|outcast|none); ejabberd 24.12's NAME SERVICE USER HOST AFFILIATION works too", 4, 5}, quiet)
	register(Command{"get_room_affiliations", "NAME SERVICE", "a MUC room's affiliations, one per line: JID, affiliation, reason (tab-separated)", 2, 2}, renderFields("jid", "affiliation", "reason"))
	register(Command{"get_room_occupants", "NAME SERVICE", "a MUC room's occupants, one per line: JID, nick, role (tab-separated)", 2, 2}, renderFields("jid", "nick", "role"))
	register(Command{"get_room_occupants_number", "NAME SERVICE", "number of occupants of a MUC room", 2, 2}, nil)
	register(Command{"delete_old_messages", "DAYS", "delete the offline messages stored more than DAYS days ago (every host)", 1, 1}, quiet)
	register(Command{"delete_old_mam_messages", "chat|groupchat|all DAYS", "delete the archived (MAM) messages older than DAYS days: of the users' archives (chat), the rooms' (groupchat) or all", 2, 2}, quiet)
	register(Command{"set_presence", "USER HOST RESOURCE TYPE SHOW STATUS PRIORITY", "make a connected session send a presence (TYPE available|unavailable, SHOW away|chat|dnd|xa|available, PRIORITY an integer)", 7, 7}, quiet)
	register(Command{"private_get", "USER HOST ELEMENT NS", "an account's private XML storage fragment (XEP-0049), in a jabber:iq:private query", 4, 4}, nil)
	register(Command{"private_set", "USER HOST ELEMENTSTRING", "store a fragment in an account's private XML storage (its root's name and namespace are the key)", 3, 3}, quiet)

	register(Command{"srg_create", "GROUP HOST LABEL DESCRIPTION DISPLAY", "create (or change) a shared roster group; DISPLAY: the groups (of HOST, comma-separated) whose members its members see, e.g. the group itself", 5, 5}, quiet)
	register(Command{"srg_delete", "GROUP HOST", "delete a shared roster group (its shared contacts leave the rosters)", 2, 2}, quiet)
	register(Command{"srg_list", "HOST", "HOST's shared roster groups, one per line", 1, 1}, renderLines)
	register(Command{"srg_get_info", "GROUP HOST", "a shared roster group's label, displayed groups and description, one per line: key, value (tab-separated)", 2, 2}, renderFields("key", "value"))
	register(Command{"srg_get_members", "GROUP HOST", "a shared roster group's members, one JID per line", 2, 2}, renderLines)
	register(Command{"srg_user_add", "USER HOST GROUP GROUPHOST", "add an account to a shared roster group: it gets the members of the groups the group displays in its roster, members of groups displaying the group get it", 4, 4}, quiet)
	register(Command{"srg_user_del", "USER HOST GROUP GROUPHOST", "remove an account from a shared roster group", 4, 4}, quiet)

	details["srg_create"] = "  xmppctl srg_create staff b.example Staff 'All staff' staff\n" +
		"Members of a group see the members of the groups it displays (DISPLAY, comma-separated; ejabberdctl's older\n" +
		"form g1\\ng2 works too) in their roster, under the displayed group's LABEL, with subscription both. xmppd writes\n" +
		"them as roster items (pushed to the clients); a contact a user had in their roster already keeps the user's own\n" +
		"item. Prints nothing (exit 0), as ejabberdctl."
	details["srg_user_add"] = "  xmppctl srg_user_add alice b.example staff b.example\nThe account must exist. Prints nothing (exit 0), as ejabberdctl."
	details["get_room_options"] = "  xmppctl get_room_options ops conference.b.example\n  title\tOps\n  ...\n" +
		"ejabberd's option names; xmppd's rooms have title, description, allow_change_subj, public, persistent, moderated,\n" +
		"members_only, allow_user_invites, password_protected, password, anonymous, mam (the room archives its messages),\n" +
		"and history_size (xmppd's: muc#maxhistoryfetch)."
	details["change_room_option"] = "  xmppctl change_room_option ops conference.b.example members_only true\n" +
		"Prints nothing (exit 0), as ejabberdctl. Making a room members-only sends its non-members out (status 322);\n" +
		"making an empty room temporary (persistent false) destroys it, as when a temporary room's last occupant leaves.\n" +
		"An ejabberd option xmppd's rooms do not have (allowpm, max_users, logging, ...) is refused, exit 1."
	details["set_room_affiliation"] = "  xmppctl set_room_affiliation ops conference.b.example bob@b.example member\n" +
		"none removes the affiliation; outcast bans (an occupant is sent out, status 301). Prints nothing (exit 0)."
	details["delete_old_messages"] = "  xmppctl delete_old_messages 31\nThe age is when the message was stored. Prints nothing (exit 0), as ejabberdctl; --json and the log say how many."
	details["delete_old_mam_messages"] = "  xmppctl delete_old_mam_messages all 365\nchat: the users' archives; groupchat: the MUC rooms' (their history on join too); all: both.\n" +
		"Prints nothing (exit 0), as ejabberdctl; --json and the log say how many."
	details["set_presence"] = "  xmppctl set_presence alice b.example phone available away 'In a meeting' 5\n" +
		"The session must be connected (on any node): it sends the presence as its client would (contacts get it).\n" +
		"Prints nothing (exit 0); a session not found is exit 1."
	details["private_get"] = "  xmppctl private_get alice b.example storage storage:bookmarks\n  <query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>...</storage></query>"
	details["private_set"] = "  xmppctl private_set alice b.example \"<storage xmlns='storage:rosternotes'><note jid='bob@b.example'>x</note></storage>\"\n" +
		"Replaces the stored fragment of that name and namespace. Reserved namespaces (jabber:*, vcard-temp, ...) are refused.\n" +
		"storage:bookmarks is what clients read as XEP-0048 bookmarks (xmppd offers them as PEP bookmarks too)."
}

// renderLines prints a list one entry per line.
func renderLines(w io.Writer, _ []string, v any) error {
	for _, x := range asList(v) {
		fmt.Fprintln(w, x)
	}
	return nil
}

// quiet prints nothing: ejabberdctl prints nothing for a command whose
// result is a return code.
func quiet(io.Writer, []string, any) error { return nil }

// renderFields prints a list of objects one per line, the fields
// tab-separated, as ejabberdctl prints a list of tuples.
func renderFields(fields ...string) Renderer {
	return func(w io.Writer, _ []string, v any) error {
		for _, m := range asMaps(v) {
			for i, f := range fields {
				if i > 0 {
					fmt.Fprint(w, "\t")
				}
				if x, ok := m[f]; ok && x != nil {
					fmt.Fprint(w, x)
				}
			}
			fmt.Fprintln(w)
		}
		return nil
	}
}
