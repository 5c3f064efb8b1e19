package replicated

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hcLog adapts raft's hclog.Logger to log/slog. Raft's Info chatter (heartbeat
// and election notices) stays at Info; its Debug/Trace go to slog Debug.
type hcLog struct {
	l       *slog.Logger
	name    string
	implied []interface{}
}

func newHCLog(l *slog.Logger) hclog.Logger { return &hcLog{l: l} }

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *hcLog) Log(level hclog.Level, msg string, args ...interface{}) {
	if h.name != "" {
		msg = h.name + ": " + msg
	}
	lv := toSlog(level)
	if lv >= slog.LevelWarn && closedLocally(args) {
		// Raft's transport reports the connections this node closed itself
		// (stopping: "failed to decode incoming command ... use of closed
		// network connection") as errors; a clean stop logs no ERROR.
		lv = slog.LevelDebug
	}
	h.l.Log(context.Background(), lv, msg, args...)
}

// closedLocally reports whether one of a record's values is the error of a
// connection closed by this process (net.ErrClosed, or raft's
// ErrTransportShutdown: a connection handler that read on after this node
// shut its transport down), not by a peer.
func closedLocally(args []interface{}) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && (errors.Is(err, net.ErrClosed) || errors.Is(err, raft.ErrTransportShutdown)) {
			return true
		}
	}
	return false
}

func (h *hcLog) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLog) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLog) Info(msg string, args ...interface{})  { h.Log(hclog.Info, msg, args...) }
func (h *hcLog) Warn(msg string, args ...interface{})  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLog) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }

func (h *hcLog) enabled(l slog.Level) bool { return h.l.Enabled(context.Background(), l) }
func (h *hcLog) IsTrace() bool             { return h.enabled(slog.LevelDebug) }
func (h *hcLog) IsDebug() bool             { return h.enabled(slog.LevelDebug) }
func (h *hcLog) IsInfo() bool              { return h.enabled(slog.LevelInfo) }
func (h *hcLog) IsWarn() bool              { return h.enabled(slog.LevelWarn) }
func (h *hcLog) IsError() bool             { return h.enabled(slog.LevelError) }

func (h *hcLog) ImpliedArgs() []interface{} { return h.implied }

func (h *hcLog) With(args ...interface{}) hclog.Logger {
	return &hcLog{l: h.l.With(args...), name: h.name, implied: append(append([]interface{}{}, h.implied...), args...)}
}

func (h *hcLog) Name() string { return h.name }

func (h *hcLog) Named(name string) hclog.Logger {
	n := name
	if h.name != "" {
		n = h.name + "." + name
	}
	return &hcLog{l: h.l, name: n, implied: h.implied}
}

func (h *hcLog) ResetNamed(name string) hclog.Logger {
	return &hcLog{l: h.l, name: name, implied: h.implied}
}

func (h *hcLog) SetLevel(hclog.Level) {}

func (h *hcLog) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (h *hcLog) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hcLog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(h.writeLine)
}

func (h *hcLog) writeLine(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := hclog.Info
	for _, lv := range []struct {
		tag string
		l   hclog.Level
	}{{"[ERR", hclog.Error}, {"[WARN", hclog.Warn}, {"[DEBUG", hclog.Debug}, {"[TRACE", hclog.Trace}} {
		if strings.Contains(line, lv.tag) {
			level = lv.l
			break
		}
	}
	h.Log(level, line)
	return len(p), nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
