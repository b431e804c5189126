package descriptor

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// FuzzUnmarshal: no input panics; every error wraps ErrInvalidArgument; an
// accepted input is exactly what MarshalBinary makes of what it decoded.
func FuzzUnmarshal(f *testing.F) {
	good := mustMarshal(f, tiny())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(seal(2, 0, payloadOf(good)))
	f.Add([]byte(Magic))
	f.Fuzz(checkUnmarshal)
}

// FuzzDecodePayload fuzzes the payload parser behind the checksum, which
// random inputs to Unmarshal almost never reach.
func FuzzDecodePayload(f *testing.F) {
	f.Add(payloadOf(mustMarshal(f, tiny())))
	d := tiny()
	d.Machine, d.DeviceState = nil, nil
	f.Add(payloadOf(mustMarshal(f, d)))
	f.Fuzz(func(t *testing.T, p []byte) {
		checkUnmarshal(t, seal(FormatMajor, FormatMinor, p))
	})
}

// checkUnmarshal checks that Unmarshal refuses b with ErrInvalidArgument or
// accepts a descriptor that round-trips.
func checkUnmarshal(t *testing.T, b []byte) {
	d, err := Unmarshal(b)
	if err != nil {
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("error does not wrap ErrInvalidArgument: %v", err)
		}
		return
	}
	checkRoundTrip(t, d)
}

// checkRoundTrip checks that an accepted descriptor re-marshals, and that
// the result decodes to the same descriptor and is a fixed point (the
// accepted bytes may differ: another DEFLATE encoder's output is valid).
func checkRoundTrip(t *testing.T, d *Descriptor) {
	t.Helper()
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatalf("accepted descriptor does not re-marshal: %v", err)
	}
	d2, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("re-marshalled descriptor does not decode: %v", err)
	}
	if !reflect.DeepEqual(d, d2) {
		t.Fatalf("round trip changed the descriptor:\n%#v\n%#v", d, d2)
	}
	if b2 := mustMarshal(t, d2); !bytes.Equal(b, b2) {
		t.Fatal("marshalling is not deterministic")
	}
}
