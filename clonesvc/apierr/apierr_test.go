package apierr

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc"
)

// TestRoundTrip: every class survives ToGRPC then FromGRPC: errors.Is
// holds for the class (or, for classes sharing a code, for the first class
// with that code), and the message is kept.
func TestRoundTrip(t *testing.T) {
	for _, c := range classes {
		orig := fmt.Errorf("vm 7: %w", c.err)
		back := FromGRPC(ToGRPC(orig))
		if back.Error() != orig.Error() {
			t.Errorf("%v: message %q, want %q", c.err, back.Error(), orig.Error())
		}
		var first error
		for _, d := range classes {
			if d.code == c.code {
				first = d.err
				break
			}
		}
		if !errors.Is(back, first) {
			t.Errorf("%v (%v): came back as %v, not %v", c.err, c.code, back, first)
		}
		if got := status.Code(ToGRPC(orig)); got != c.code {
			t.Errorf("%v: code %v, want %v", c.err, got, c.code)
		}
	}
}

func TestUnclassified(t *testing.T) {
	if ToGRPC(nil) != nil || FromGRPC(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if got := status.Code(ToGRPC(errors.New("odd"))); got != codes.Unknown {
		t.Fatalf("unclassified error: code %v, want Unknown", got)
	}
	back := FromGRPC(status.Error(codes.Unknown, "odd"))
	if errors.Is(back, clonesvc.ErrNotFound) || back.Error() != "odd" {
		t.Fatalf("unknown code came back as %v", back)
	}
	plain := errors.New("dial failed")
	if FromGRPC(plain) != plain {
		t.Fatal("a non-status error must pass unchanged")
	}
	if !errors.Is(FromGRPC(status.Error(codes.DeadlineExceeded, "late")), allocator.ErrTimeout) {
		t.Fatal("DeadlineExceeded must come back as a timeout")
	}
}
