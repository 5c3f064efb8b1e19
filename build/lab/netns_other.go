//go:build !linux

package lab

import (
	"context"
	"errors"
	"os"
)

// NetNS is the root-mode lab network (Linux only).
type NetNS struct{ Name string }

var errNoNetNS = errors.New("lab: network namespaces need Linux")

// CreateNetNS is Linux only.
func CreateNetNS(string) (*NetNS, error) { return nil, errNoNetNS }

// Delete is Linux only.
func (n *NetNS) Delete() error { return errNoNetNS }

// OpenTap is Linux only.
func (n *NetNS) OpenTap(string) (*os.File, error) { return nil, errNoNetNS }

// ServeBoot is Linux only.
func ServeBoot(context.Context, BootServerOptions) error { return errNoNetNS }

// Control is Linux only.
func Control(string, string) (string, error) { return "", errNoNetNS }

// TCGTiming is the lab's xmppd timing for TCG guests.
const TCGTiming = ""

// StorageURL is node n's LUN.
func StorageURL(n int) string { return "" }

// BootServerOptions configure the root-mode boot server (Linux only).
type BootServerOptions struct {
	Dir, Domain, Kernel, Initrd, Cmdline, Key string
	XmppdYAML                                 string
	Nodes, LUNMiB                             int
	Storage                                   bool
}
