//go:build !linux

package loadgen

import (
	"errors"
	"net"
)

type rxConn struct {
	net.Conn
	stamp int64
}

func newRxConn(net.Conn) (*rxConn, error) {
	return nil, errors.New("receive timestamps need Linux")
}
