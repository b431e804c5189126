//go:build !egocapi

package ego

import (
	"fmt"

	"github.com/snowflock/snowflock/allocator"
)

// newCAPI is unavailable: this build has no EGO C API (build tag egocapi).
func newCAPI(_, _, _, _ string) (transport, error) {
	return nil, fmt.Errorf("api capi: this build has no EGO C API support; rebuild sfalloc-plugin-ego with -tags egocapi on a host with the EGO SDK (vem.h, libvem), or use api rest: %w", allocator.ErrInvalidArgument)
}
