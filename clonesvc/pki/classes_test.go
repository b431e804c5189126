package pki_test

import (
	"errors"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/pki"
)

// The service's error classes are errdefs's: the daemon API maps pki's
// errors like its own.
func TestErrorsAreServiceClasses(t *testing.T) {
	if _, err := pki.ParseRole("admin"); !errors.Is(err, clonesvc.ErrInvalidArgument) {
		t.Errorf("ParseRole(admin) = %v, want clonesvc.ErrInvalidArgument", err)
	}
	if _, err := pki.LoadServerTLS(t.TempDir(), "node"); !errors.Is(err, clonesvc.ErrNotFound) {
		t.Errorf("LoadServerTLS(empty dir) = %v, want clonesvc.ErrNotFound", err)
	}
}
