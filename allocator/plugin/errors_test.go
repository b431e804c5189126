package plugin

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snowflock/snowflock/allocator"
)

func TestErrorClassesRoundTrip(t *testing.T) {
	for _, c := range classes {
		orig := fmt.Errorf("backend x: something about %q: %w", "it", c.err)
		st := ToStatus(orig)
		if s, _ := status.FromError(st); s.Code() != c.code {
			t.Errorf("%v -> code %s, want %s", c.err, s.Code(), c.code)
		}
		back := FromStatus(st)
		if !errors.Is(back, c.err) {
			t.Errorf("%v did not survive the round trip: %v", c.err, back)
		}
		if back.Error() != orig.Error() {
			t.Errorf("message changed: %q -> %q", orig, back)
		}
		// Twice over (a proxy of a proxy) changes nothing.
		if again := FromStatus(ToStatus(back)); !errors.Is(again, c.err) || again.Error() != orig.Error() {
			t.Errorf("second round trip: %v", again)
		}
	}
	if !errors.Is(FromStatus(ToStatus(context.DeadlineExceeded)), allocator.ErrTimeout) {
		t.Errorf("context.DeadlineExceeded does not come back as ErrTimeout")
	}
	for _, err := range []error{errors.New("no class"), status.Error(codes.Internal, "boom"), errors.New("not a status")} {
		var back error
		if _, ok := status.FromError(err); ok {
			back = FromStatus(err)
		} else {
			back = FromStatus(ToStatus(err))
		}
		if !errors.Is(back, allocator.ErrBackendDown) {
			t.Errorf("%v -> %v, want ErrBackendDown", err, back)
		}
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Errorf("nil does not map to nil")
	}
}
