package server

import (
	"fmt"
	"log/slog"
	"strings"
)

type slogLevel struct{ l slog.Level }

func (s *slogLevel) parse(v string) error {
	switch strings.ToLower(v) {
	case "debug":
		s.l = slog.LevelDebug
	case "info":
		s.l = slog.LevelInfo
	case "warn", "warning":
		s.l = slog.LevelWarn
	case "error":
		s.l = slog.LevelError
	default:
		return fmt.Errorf("unknown log level %q (debug, info, warn, error)", v)
	}
	return nil
}

// ParseLevel parses a log level name.
func ParseLevel(v string) (slog.Level, error) {
	var s slogLevel
	err := s.parse(v)
	return s.l, err
}
