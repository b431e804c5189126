package descriptor_test

import (
	"errors"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/descriptor"
)

// The service's error classes are errdefs's: a corrupt descriptor is
// clonesvc.ErrInvalidArgument to the daemon API, a missing one ErrNotFound.
func TestErrorsAreServiceClasses(t *testing.T) {
	if _, err := descriptor.Unmarshal([]byte("junk")); !errors.Is(err, clonesvc.ErrInvalidArgument) {
		t.Errorf("Unmarshal(junk) = %v, want clonesvc.ErrInvalidArgument", err)
	}
	if _, err := descriptor.Read(t.TempDir() + "/missing"); !errors.Is(err, clonesvc.ErrNotFound) {
		t.Errorf("Read(missing) = %v, want clonesvc.ErrNotFound", err)
	}
}
