package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// New returns a logger writing to stderr at level ("debug", "info",
// "warn", "error") in format ("console": readable, coloured only on a
// terminal; "json": one object per line), tagged with prog.
func NewLogger(level, format string, stderr io.Writer, prog string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var w io.Writer
	switch format {
	case "json":
		w = stderr
	case "console":
		f, ok := stderr.(*os.File)
		color := ok && term.IsTerminal(int(f.Fd()))
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: !color}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("prog", prog).Logger(), nil
}
