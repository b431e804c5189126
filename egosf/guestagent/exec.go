package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// exec runs req.Args for sfld: no timeout (ctx ends only with the agent),
// stdout and stderr together, captured up to guestproto.MaxOutput and
// copied to the console.
func (a *Agent) exec(ctx context.Context, req, reply *guestproto.Message) {
	if len(req.Args) == 0 || req.Args[0] == "" {
		reply.Error = guestproto.NewError("invalid_argument", errors.New("exec: no command"))
		return
	}
	a.cfg.Log.Info().Str("cmd", strings.Join(req.Args, " ")).Msg("exec")
	out := &cappedBuffer{max: guestproto.MaxOutput}
	w := io.MultiWriter(out, ignoreErrors{a.cfg.Console})
	cmd := exec.CommandContext(ctx, req.Args[0], req.Args[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	reply.Output = out.Bytes()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		reply.ExitCode = exitCode(ee)
	case errors.Is(err, exec.ErrNotFound):
		reply.Error = guestproto.NewError("not_found", fmt.Errorf("exec %s: %w", req.Args[0], err))
	default:
		reply.Error = guestproto.NewError("invalid_argument", fmt.Errorf("exec %s: %w", req.Args[0], err))
	}
	a.cfg.Log.Info().Str("cmd", req.Args[0]).Int("exit", reply.ExitCode).Int("output", len(reply.Output)).Msg("exec done")
}

// exitCode is a finished command's status as a shell reports it (128+N
// when signal N killed it).
func exitCode(ee *exec.ExitError) int {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Bytes returns what was kept.
func (c *cappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf
}

// ignoreErrors writes to w and pretends it worked: a console that fails
// must not fail the command.
type ignoreErrors struct{ w io.Writer }

func (i ignoreErrors) Write(p []byte) (int, error) {
	i.w.Write(p)
	return len(p), nil
}
