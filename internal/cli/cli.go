// Package cli holds the conventions every SnowFlock command shares: errors
// as one line on stderr, exit statuses 0/1/2, usage errors, and the
// --log-level/--log-format flags.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and failed
	ExitUsage   = 2 // how it was called (or configured) is wrong
)

// UsageError marks an error in how a command was called.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// ExitError carries an exit status to return as is, without a message
// (a child command's status).
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run executes root with args and returns the exit status: 0 on success;
// an ExitError's code; 2 for usage errors, cobra's own (unknown command or
// flag) and errors of any of usageClasses; 1 otherwise. Errors are printed
// as one line "NAME: message" on stderr.
func Run(root *cobra.Command, args []string, stdin io.Reader, stdout, stderr io.Writer, usageClasses ...error) int {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{err} })
	root.SetArgs(args)
	if stdin != nil {
		root.SetIn(stdin)
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var ee ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Code
	}
	fmt.Fprintln(stderr, root.Name()+": "+strings.Join(strings.Fields(err.Error()), " "))
	var ue UsageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return ExitUsage
	}
	for _, c := range usageClasses {
		if errors.Is(err, c) {
			return ExitUsage
		}
	}
	return ExitFailure
}

// ExactArgs accepts exactly n positional arguments, named in the error.
func ExactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return UsageError{fmt.Errorf("want %s, got %d argument(s)", names, len(args))}
		}
		return nil
	}
}

// LogFlags are the log flags of a command.
type LogFlags struct {
	Level, Format string
	// Log is set before any subcommand runs.
	Log zerolog.Logger
}

// Register adds --log-level (default level) and --log-format to root and
// sets up Log before any subcommand runs, on stderr.
func (l *LogFlags) Register(root *cobra.Command, level string, stderr io.Writer) {
	pf := root.PersistentFlags()
	pf.StringVar(&l.Level, "log-level", level, "log level: debug, info, warn, error")
	pf.StringVar(&l.Format, "log-format", "console", "log format on stderr: console or json")
	prev := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		log, err := NewLogger(l.Level, l.Format, stderr, root.Name())
		if err != nil {
			return UsageError{err}
		}
		l.Log = log
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}
