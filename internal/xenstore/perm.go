package xenstore

import (
	"fmt"
	"io/fs"
	"strconv"
)

// Access is what a permission entry grants, by its letter on the wire.
type Access byte

// Access letters of docs/misc/xenstore.txt.
const (
	AccessNone  Access = 'n'
	AccessRead  Access = 'r'
	AccessWrite Access = 'w'
	AccessBoth  Access = 'b' // read and write
)

// Perm is one entry of a node's permission list ("r5": domain 5 may
// read). The first entry of a list names the node's owner, who may do
// anything, and its Access is what every domain not listed later gets.
// Dom0 (and a domain targeting the owner) always has full access.
type Perm struct {
	Domid  uint32
	Access Access
}

// String returns p as on the wire ("b3").
func (p Perm) String() string {
	return string(rune(p.Access)) + strconv.FormatUint(uint64(p.Domid), 10)
}

// ParsePerm parses a permission string: one of the letters n, r, w, b and
// a decimal domain ID.
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("permission %q: %w", s, fs.ErrInvalid)
	}
	a := Access(s[0])
	switch a {
	case AccessNone, AccessRead, AccessWrite, AccessBoth:
	default:
		return Perm{}, fmt.Errorf("permission %.24q: unknown access %q: %w", s, s[0], fs.ErrInvalid)
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return Perm{}, fmt.Errorf("permission %.24q: domain ID is not decimal: %w", s, fs.ErrInvalid)
		}
	}
	id, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil {
		return Perm{}, fmt.Errorf("permission %.24q: %w", s, fs.ErrInvalid)
	}
	return Perm{Domid: uint32(id), Access: a}, nil
}
