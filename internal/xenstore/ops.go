package xenstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// maxDirectoryBytes caps the names Directory gathers with DIRECTORY_PART
// when a node's children do not fit in one reply.
const maxDirectoryBytes = 1 << 20

// maxDirectoryRetries bounds how often Directory restarts a DIRECTORY_PART
// listing because the node changed in between.
const maxDirectoryRetries = 8

// checkPath refuses what xenstored would refuse, and anything that would
// break the framing (a NUL). special allows @introduceDomain-style watch
// paths.
func checkPath(op MsgType, path string, special bool) error {
	why := ""
	switch {
	case path == "":
		why = "empty path"
	case path[0] == '@' && !special:
		why = "special path outside a watch"
	case path[0] == '/' && len(path) > XENSTORE_ABS_PATH_MAX:
		why = "path longer than XENSTORE_ABS_PATH_MAX"
	case path[0] != '/' && path[0] != '@' && len(path) > XENSTORE_REL_PATH_MAX:
		why = "relative path longer than XENSTORE_REL_PATH_MAX"
	case len(path) > 1 && path[len(path)-1] == '/':
		why = "trailing slash"
	}
	for i := 0; why == "" && i < len(path); i++ {
		switch b := path[i]; {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '_', b == '@':
		case b == '/':
			if i > 0 && path[i-1] == '/' {
				why = "double slash"
			}
		default:
			why = fmt.Sprintf("character %q", b)
		}
	}
	if why != "" {
		return fmt.Errorf("xenstore %s %.80q: %s: %w", op, path, why, fs.ErrInvalid)
	}
	return nil
}

// Read returns the value of the node at path.
func (c *Client) Read(ctx context.Context, path string) ([]byte, error) {
	return c.read(ctx, 0, path)
}

// Write sets the value of the node at path, creating it and any missing
// parents (with empty values). The value is raw bytes; xenstore.txt asks
// for printable ASCII, but xenstored stores anything.
func (c *Client) Write(ctx context.Context, path string, value []byte) error {
	return c.write(ctx, 0, path, value)
}

// Mkdir makes sure the node at path exists, creating it and its parents
// with empty values if needed.
func (c *Client) Mkdir(ctx context.Context, path string) error {
	return c.simple(ctx, XS_MKDIR, 0, path)
}

// Remove (RM) deletes the node at path and everything below it. A missing
// node is no error, but a missing parent is (fs.ErrNotExist).
func (c *Client) Remove(ctx context.Context, path string) error {
	return c.simple(ctx, XS_RM, 0, path)
}

// Directory returns the names of the node's children, in xenstored's
// order (creation order, not sorted). Lists too long for one reply are
// fetched with DIRECTORY_PART.
func (c *Client) Directory(ctx context.Context, path string) ([]string, error) {
	return c.directory(ctx, 0, path)
}

// GetPerms returns the node's permission list; the first entry names the
// owner.
func (c *Client) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	return c.getPerms(ctx, 0, path)
}

// SetPerms replaces the node's permission list (the caller must own the
// node, or be dom0). perms[0] names the owner and the default access.
func (c *Client) SetPerms(ctx context.Context, path string, perms ...Perm) error {
	return c.setPerms(ctx, 0, path, perms)
}

// GetDomainPath returns the home of domain domid (/local/domain/<domid>),
// the base of its relative paths.
func (c *Client) GetDomainPath(ctx context.Context, domid uint32) (string, error) {
	id := strconv.FormatUint(uint64(domid), 10)
	b, err := c.call(ctx, XS_GET_DOMAIN_PATH, 0, id, cstrings(id))
	if err != nil {
		return "", err
	}
	return trimNUL(b), nil
}

// IsDomainIntroduced reports whether xenstored is in communication with
// domain domid (introduced, and not released or destroyed since).
func (c *Client) IsDomainIntroduced(ctx context.Context, domid uint32) (bool, error) {
	id := strconv.FormatUint(uint64(domid), 10)
	b, err := c.call(ctx, XS_IS_DOMAIN_INTRODUCED, 0, id, cstrings(id))
	if err != nil {
		return false, err
	}
	switch trimNUL(b) {
	case "T":
		return true, nil
	case "F":
		return false, nil
	}
	return false, fmt.Errorf("xenstore IS_DOMAIN_INTRODUCED %s: reply %.16q: %w", id, b, ErrProtocol)
}

func (c *Client) read(ctx context.Context, tx uint32, path string) ([]byte, error) {
	if err := checkPath(XS_READ, path, false); err != nil {
		return nil, err
	}
	return c.call(ctx, XS_READ, tx, path, cstrings(path))
}

func (c *Client) write(ctx context.Context, tx uint32, path string, value []byte) error {
	if err := checkPath(XS_WRITE, path, false); err != nil {
		return err
	}
	payload := make([]byte, 0, len(path)+1+len(value))
	payload = append(append(append(payload, path...), 0), value...) // the value has no NUL
	_, err := c.call(ctx, XS_WRITE, tx, path, payload)
	return err
}

// simple sends a request whose payload is "path\0" and whose reply is "OK".
func (c *Client) simple(ctx context.Context, op MsgType, tx uint32, path string) error {
	if err := checkPath(op, path, false); err != nil {
		return err
	}
	_, err := c.call(ctx, op, tx, path, cstrings(path))
	return err
}

func (c *Client) directory(ctx context.Context, tx uint32, path string) ([]string, error) {
	if err := checkPath(XS_DIRECTORY, path, false); err != nil {
		return nil, err
	}
	b, err := c.call(ctx, XS_DIRECTORY, tx, path, cstrings(path))
	if err == nil {
		return splitNames(b), nil
	}
	if !errors.Is(err, ErrTooLarge) {
		return nil, err
	}
	names, perr := c.directoryParts(ctx, tx, path)
	if perr != nil {
		return nil, fmt.Errorf("%w (then DIRECTORY_PART: %w)", err, perr)
	}
	return names, nil
}

// directoryParts lists a directory with DIRECTORY_PART, restarting when
// the node's generation changes between parts.
func (c *Client) directoryParts(ctx context.Context, tx uint32, path string) ([]string, error) {
	for range maxDirectoryRetries {
		var names []string
		gen, off := "", 0
		for {
			b, err := c.call(ctx, XS_DIRECTORY_PART, tx, path, cstrings(path, strconv.Itoa(off)))
			if err != nil {
				return nil, err
			}
			p, err := parseDirPart(b)
			if err != nil {
				return nil, fmt.Errorf("xenstore DIRECTORY_PART %s: %w", path, err)
			}
			if gen == "" {
				gen = p.gen
			} else if p.gen != gen {
				break // changed under us: start again
			}
			names = append(names, p.names...)
			off += p.size
			if off > maxDirectoryBytes {
				return nil, fmt.Errorf("xenstore DIRECTORY_PART %s: more than %d bytes of names: %w", path, maxDirectoryBytes, ErrTooLarge)
			}
			if p.last {
				return names, nil
			}
		}
	}
	return nil, fmt.Errorf("xenstore DIRECTORY_PART %s: changed during %d listings: %w", path, maxDirectoryRetries, ErrRetry)
}

func (c *Client) getPerms(ctx context.Context, tx uint32, path string) ([]Perm, error) {
	if err := checkPath(XS_GET_PERMS, path, false); err != nil {
		return nil, err
	}
	b, err := c.call(ctx, XS_GET_PERMS, tx, path, cstrings(path))
	if err != nil {
		return nil, err
	}
	perms, err := parsePerms(b)
	if err != nil {
		return nil, fmt.Errorf("xenstore GET_PERMS %s: %w", path, err)
	}
	return perms, nil
}

func (c *Client) setPerms(ctx context.Context, tx uint32, path string, perms []Perm) error {
	if err := checkPath(XS_SET_PERMS, path, false); err != nil {
		return err
	}
	if len(perms) == 0 {
		return fmt.Errorf("xenstore SET_PERMS %s: no permissions (the first names the owner): %w", path, fs.ErrInvalid)
	}
	ss := []string{path}
	for _, p := range perms {
		switch p.Access {
		case AccessNone, AccessRead, AccessWrite, AccessBoth:
		default:
			return fmt.Errorf("xenstore SET_PERMS %s: access %q: %w", path, p.Access, fs.ErrInvalid)
		}
		ss = append(ss, p.String())
	}
	_, err := c.call(ctx, XS_SET_PERMS, tx, path, cstrings(ss...))
	return err
}
