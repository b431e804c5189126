package allocator

import (
	"errors"
	"testing"
	"time"
)

func TestRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		r  Request
		ok bool
	}{
		{Request{Min: 1, Max: 1}, true},
		{Request{Min: 2, Max: 8, Lease: MinLease}, true},
		{Request{Min: 0, Max: 1}, false},
		{Request{Min: 1, Max: 0}, false},
		{Request{Min: 3, Max: 2}, false},
		{Request{Min: 1, Max: 1, Lease: MinLease - 1}, false},
		{Request{Min: 1, Max: 1, Lease: -time.Hour}, false},
	} {
		err := tc.r.Validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("Validate(%+v) = %v, want ok=%v (else ErrInvalidArgument)", tc.r, err, tc.ok)
		}
	}
}

func TestExpiredAndFormat(t *testing.T) {
	now := time.Now()
	if (&Allocation{}).Expired(now) {
		t.Error("an allocation without expiry expired")
	}
	if !(&Allocation{Expires: now}).Expired(now) || (&Allocation{Expires: now.Add(time.Second)}).Expired(now) {
		t.Error("expiry is at Expires, not before")
	}
	slots := []Slot{{Host: "h1", Count: 2}, {Host: "h2", Count: 1}}
	if got := FormatSlots(slots); got != "h1:2,h2:1" || Total(slots) != 3 {
		t.Errorf("FormatSlots = %q, Total = %d", got, Total(slots))
	}
}
