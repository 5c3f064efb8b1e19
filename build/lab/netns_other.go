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

// ServeNetNSDHCP is Linux only.
func ServeNetNSDHCP(context.Context, string, string) error { return errNoNetNS }
