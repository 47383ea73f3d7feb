package plugins

import (
	"context"
	"log/slog"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// logWriter is the guest's stdout or stderr: each write becomes one log
// record at a fixed level, tagged with the stream, cut at 4 KiB. It keeps
// no state (no line buffer), so one writer serves every instance of a
// plugin at once; C's stdio and Go's fmt write whole lines anyway.
type logWriter struct {
	log    *slog.Logger // already tagged with the plugin's name
	level  slog.Level
	stream string
}

// Write implements io.Writer; it never fails.
func (w logWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > maxMessage {
		p = p[:maxMessage]
	}
	if msg := strings.TrimRight(string(p), "\r\n"); msg != "" {
		w.log.Log(context.Background(), w.level, msg, "stream", w.stream)
	}
	return n, nil
}

// logLevels maps storegate.log's levels (0 debug, 1 info, 2 warn, 3 error).
var logLevels = [...]slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}

// logFunc is the host function storegate.log(level, ptr, len): the
// message, cut at 4 KiB, goes to log at the given level (unknown levels
// log as info). A message outside the guest's memory is reported instead.
// It is an api.GoModuleFunc: wazero calls it with no reflection.
func logFunc(log *slog.Logger) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		level, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
		lvl := slog.LevelInfo
		if level < uint32(len(logLevels)) {
			lvl = logLevels[level]
		}
		if !log.Enabled(ctx, lvl) {
			return
		}
		b, ok := mod.Memory().Read(ptr, min(n, maxMessage))
		if !ok {
			log.Warn("plugin log message lies outside its memory", "ptr", ptr, "len", n)
			return
		}
		log.Log(ctx, lvl, strings.ToValidUTF8(string(b), "\uFFFD"))
	}
}
