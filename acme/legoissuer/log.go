package legoissuer

import (
	"fmt"
	"log/slog"
	"strings"

	legolog "github.com/go-acme/lego/v4/log"
)

// RouteLog sends lego's own log lines to l, one line per event.
func RouteLog(l *slog.Logger) {
	legolog.Logger = legoLogger{l.With("component", "lego")}
}

type legoLogger struct{ l *slog.Logger }

// emit logs one lego line. lego's [INFO] lines narrate each step of an
// order (edgecert logs the outcome itself), so they go to debug; its
// warnings stay warnings.
func (g legoLogger) emit(msg string) {
	msg = strings.TrimSpace(msg)
	switch {
	case strings.HasPrefix(msg, "[WARN] "):
		g.l.Warn(strings.TrimPrefix(msg, "[WARN] "))
	case strings.HasPrefix(msg, "[INFO] "):
		g.l.Debug(strings.TrimPrefix(msg, "[INFO] "))
	default:
		g.l.Debug(msg)
	}
}

func (g legoLogger) Print(args ...any)                 { g.emit(fmt.Sprint(args...)) }
func (g legoLogger) Println(args ...any)               { g.emit(fmt.Sprintln(args...)) }
func (g legoLogger) Printf(format string, args ...any) { g.emit(fmt.Sprintf(format, args...)) }

// lego calls Fatal only from its CLI; a library must not exit the process,
// so these log at error level and return.
func (g legoLogger) Fatal(args ...any)                 { g.l.Error(fmt.Sprint(args...)) }
func (g legoLogger) Fatalln(args ...any)               { g.l.Error(fmt.Sprintln(args...)) }
func (g legoLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
