// Package iscsi is a pure-Go userspace iSCSI initiator: the RFC 7143 subset a
// storage engine needs, exposing one LUN as a block device (ReadAt, WriteAt,
// Sync, Size, BlockSize) that satisfies storage.BlockDevice structurally.
//
// It must not import storage or xmppd. DESIGN.md decision 6 says why it exists:
// the kernel initiator stalls I/O for 120 s on target loss and leaves
// read-only filesystems behind; this one reports loss within its task timeout
// and logs in again by itself.
//
// # Use
//
//	dev, err := iscsi.Dial(ctx, cfg) // or iscsi.DialURL(ctx, "iscsi://user:secret@host/iqn.../1")
//	...
//	dev.WriteAt(block, off)          // durable when it returns nil
//	dev.Close()
//
// Dial logs in once (its error says why the LUN cannot be used: ErrAuth,
// ErrTargetNotFound, a dial error) and then keeps the session up in the
// background until Close. For a caller that wants to own the loop: New, then
// Start (one login attempt) and Run(ctx), which re-logs in with backoff and
// returns when ctx is cancelled. State, Changed and WaitConnected tell a
// caller (storage's RAM-only fallback) when the LUN goes and comes back.
//
// # What is implemented
//
//   - SendTargets discovery (Discover).
//   - Login: security stage with CHAP (MD5) or mutual CHAP, or AuthMethod=None;
//     operational negotiation of HeaderDigest/DataDigest (CRC32C),
//     MaxRecvDataSegmentLength (declarative, both ways), MaxBurstLength,
//     FirstBurstLength, ImmediateData, InitialR2T, MaxOutstandingR2T,
//     DefaultTime2Wait/Retain, ErrorRecoveryLevel=0, DataPDUInOrder and
//     DataSequenceInOrder=Yes; answers to keys the target proposes;
//     NotUnderstood for unknown ones; one login redirection followed.
//   - SCSI: TEST UNIT READY, INQUIRY (standard and unit serial number VPD),
//     READ CAPACITY(16), READ(16), WRITE(16) with FUA, SYNCHRONIZE CACHE(10).
//     Commands the target did not execute (UNIT ATTENTION after a re-login,
//     BUSY, TASK SET FULL) are retried.
//   - Data transfer: immediate data, unsolicited Data-Out up to FirstBurstLength,
//     R2T-solicited Data-Out sequences, multi-PDU Data-In, residuals.
//   - Several commands in flight (MaxInFlight, default 32) within the target's
//     CmdSN window; I/O larger than MaxTransfer is split into concurrent
//     commands.
//   - NOP-Out pings on an idle connection, answers to the target's NOP-In.
//   - Task timeouts, and automatic re-login with exponential backoff and jitter.
//
// Not implemented, by choice: error recovery levels 1 and 2 (SNACK, task
// reassignment), several connections per session, task management (ABORT
// TASK: a timed-out task ends the connection instead), bidirectional
// commands, iSER.
//
// # Concurrency
//
// One reader goroutine per connection reads every PDU and dispatches it by
// initiator task tag; one writer goroutine sends the Data-Out sequences that
// R2Ts ask for and answers target pings; a caller sends its own command (and
// its immediate and unsolicited data) under the socket mutex, so commands go
// out in CmdSN order. A command waits, bounded by its task timeout, while the
// target's MaxCmdSN window is shut.
//
// # Durability: FUA, not write-back plus SYNCHRONIZE CACHE
//
// WriteAt sends WRITE(16) with FUA set, so a WriteAt that returns nil is on
// stable media (tgtd answers FUA with fdatasync of its backing file), and
// Sync returns nil at once. The alternative, plain writes made durable by
// SYNCHRONIZE CACHE on Sync, costs a second round trip on every commit of a
// log that appends one record per commit, and its contract breaks across a
// reconnect: writes acknowledged from the target's cache may vanish with a
// target reboot while the initiator is away. With FUA "acknowledged" and
// "durable" are the same event, which is what storage's log needs. The
// write-back mode is there for large batched writers (Config.WriteBack): it
// tracks writes that no Sync has covered, and the first Sync after a lost
// connection fails with ErrConnectionLost rather than claim they are safe.
//
// # Errors
//
//   - ErrConnectionLost: the command was outstanding when the connection ended
//     (reset, task timeout, unanswered ping, protocol violation). For a write
//     the outcome is unknown: the block holds the old or the new data. Writing
//     it again after re-login is safe.
//   - ErrReconnecting: no connection is logged in; nothing was sent. Returned at
//     once (fail fast) while Run logs in again.
//   - ErrClosed, ErrUnaligned (WriteAt is block-aligned; ReadAt is not, it
//     reads through a bounce buffer), ErrOutOfRange, io.EOF from ReadAt at the
//     end of the LUN.
//   - *SCSIError: a CHECK CONDITION or other status, with sense key, ASC, ASCQ.
//   - ErrAuth, ErrTargetNotFound, *LoginError: login refused.
//   - ErrProtocol: the target broke the protocol (bad lengths, unknown tags,
//     oversized data segments, R2Ts outside the write, digest mismatches). The
//     connection is dropped and its commands fail with ErrConnectionLost; a
//     hostile target can make us reconnect, never crash or hang.
//
// # Failure timing (measured against tgtd, see docs/iscsi.md)
//
// A reset is seen at once (the reader's read fails). A frozen target or a
// dropped network is seen when the oldest outstanding command reaches
// TaskTimeout (default 3 s), or, on an idle connection, when the NOP-Out ping
// sent after NOPInterval (1 s) of silence goes unanswered for TaskTimeout.
// Re-login uses the same ISID with TSIH 0, so the target reinstates the
// session and drops the old one's tasks; attempts run every 25 ms doubling to
// 250 ms (±20%). Within an attempt a fresh TCP connect starts every
// DialTimeout/4 while earlier ones hang, so a network that comes back is seen
// within ~125 ms rather than at the kernel's next SYN retry (1 s, 3 s, 7 s).
//
// The subpackage tgt runs Debian's tgtd for tests and benchmarks; iscsibench
// holds the benchmark shared by bench/iscsi and `xedge iscsi bench`.
package iscsi
