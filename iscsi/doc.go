// Package iscsi is a pure-Go userspace iSCSI initiator (an RFC 7143 subset) exposing a
// block device: ReadAt, WriteAt, Sync, Size, BlockSize.
//
// It must not import storage or xmppd.
package iscsi
