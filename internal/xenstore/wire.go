package xenstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MsgType is analogous to enum xsd_sockmsg_type from
// xen/include/public/io/xs_wire.h: the type of a request, its reply, an
// error reply or a watch event.
type MsgType uint32

// Message types, under their names in xs_wire.h.
const (
	XS_CONTROL              MsgType = 0 // formerly XS_DEBUG
	XS_DIRECTORY            MsgType = 1
	XS_READ                 MsgType = 2
	XS_GET_PERMS            MsgType = 3
	XS_WATCH                MsgType = 4
	XS_UNWATCH              MsgType = 5
	XS_TRANSACTION_START    MsgType = 6
	XS_TRANSACTION_END      MsgType = 7
	XS_INTRODUCE            MsgType = 8
	XS_RELEASE              MsgType = 9
	XS_GET_DOMAIN_PATH      MsgType = 10
	XS_WRITE                MsgType = 11
	XS_MKDIR                MsgType = 12
	XS_RM                   MsgType = 13
	XS_SET_PERMS            MsgType = 14
	XS_WATCH_EVENT          MsgType = 15
	XS_ERROR                MsgType = 16
	XS_IS_DOMAIN_INTRODUCED MsgType = 17
	XS_RESUME               MsgType = 18
	XS_SET_TARGET           MsgType = 19
	XS_RESTRICT             MsgType = 20 // obsolete; xenstored refuses it
	XS_RESET_WATCHES        MsgType = 21
	XS_DIRECTORY_PART       MsgType = 22
)

var msgNames = [...]string{
	"CONTROL", "DIRECTORY", "READ", "GET_PERMS", "WATCH", "UNWATCH",
	"TRANSACTION_START", "TRANSACTION_END", "INTRODUCE", "RELEASE",
	"GET_DOMAIN_PATH", "WRITE", "MKDIR", "RM", "SET_PERMS", "WATCH_EVENT",
	"ERROR", "IS_DOMAIN_INTRODUCED", "RESUME", "SET_TARGET", "RESTRICT",
	"RESET_WATCHES", "DIRECTORY_PART",
}

// String returns the type's name without the XS_ prefix ("READ").
func (t MsgType) String() string {
	if int(t) < len(msgNames) {
		return msgNames[t]
	}
	return "TYPE_" + strconv.FormatUint(uint64(t), 10)
}

// Limits from xs_wire.h.
const (
	// XENSTORE_PAYLOAD_MAX caps a message's payload in both directions;
	// xenstored drops a connection that exceeds it.
	XENSTORE_PAYLOAD_MAX = 4096
	// XENSTORE_ABS_PATH_MAX caps an absolute path.
	XENSTORE_ABS_PATH_MAX = 3072
	// XENSTORE_REL_PATH_MAX caps a relative path.
	XENSTORE_REL_PATH_MAX = 2048
)

// SockMsg is analogous to struct xsd_sockmsg from
// xen/include/public/io/xs_wire.h: the header before every message's
// payload, four little-endian uint32s with no padding.
type SockMsg struct {
	Type  MsgType // XS_*
	ReqID uint32  // chosen by the client, echoed in the reply
	TxID  uint32  // transaction, 0 outside one
	Len   uint32  // length of the payload that follows
}

// SizeOfSockMsg is the size of struct xsd_sockmsg on the wire.
const SizeOfSockMsg = 16

func (h SockMsg) put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], uint32(h.Type))
	binary.LittleEndian.PutUint32(b[4:], h.ReqID)
	binary.LittleEndian.PutUint32(b[8:], h.TxID)
	binary.LittleEndian.PutUint32(b[12:], h.Len)
}

func getSockMsg(b []byte) SockMsg {
	return SockMsg{
		Type:  MsgType(binary.LittleEndian.Uint32(b[0:])),
		ReqID: binary.LittleEndian.Uint32(b[4:]),
		TxID:  binary.LittleEndian.Uint32(b[8:]),
		Len:   binary.LittleEndian.Uint32(b[12:]),
	}
}

// appendMsg appends header h (with Len set to len(payload)) and payload to
// dst.
func appendMsg(dst []byte, h SockMsg, payload []byte) []byte {
	h.Len = uint32(len(payload))
	var hb [SizeOfSockMsg]byte
	h.put(hb[:])
	return append(append(dst, hb[:]...), payload...)
}

// readMsg reads one message. It refuses a length over XENSTORE_PAYLOAD_MAX
// before allocating (ErrProtocol), returns io.EOF at a clean end between
// messages and io.ErrUnexpectedEOF inside one.
func readMsg(r io.Reader) (SockMsg, []byte, error) {
	var hb [SizeOfSockMsg]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return SockMsg{}, nil, err
	}
	h := getSockMsg(hb[:])
	if h.Len > XENSTORE_PAYLOAD_MAX {
		return h, nil, fmt.Errorf("%s message of %d bytes exceeds XENSTORE_PAYLOAD_MAX (%d): %w",
			h.Type, h.Len, XENSTORE_PAYLOAD_MAX, ErrProtocol)
	}
	payload := make([]byte, h.Len)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, err
	}
	return h, payload, nil
}

// Payload encoders and decoders. Strings on the wire are NUL-terminated
// ("path\0"); a WRITE's value and a READ reply are raw bytes.

// cstrings concatenates each of ss followed by a NUL.
func cstrings(ss ...string) []byte {
	n := 0
	for _, s := range ss {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

// splitNames splits NUL-terminated names (a DIRECTORY reply). Empty names
// are dropped and a last name without its NUL is kept.
func splitNames(b []byte) []string {
	var names []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		if i > 0 {
			names = append(names, string(b[:i]))
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return names
}

// trimNUL returns b up to its first NUL (a one-string reply such as
// "/local/domain/5\0" or "T\0").
func trimNUL(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseWatchEvent decodes a WATCH_EVENT payload "path\0token\0". Anything
// after the token's NUL (older Linux kernels appended more) is ignored.
func parseWatchEvent(b []byte) (path, token string, err error) {
	i := bytes.IndexByte(b, 0)
	if i <= 0 {
		return "", "", fmt.Errorf("watch event without a path: %w", ErrProtocol)
	}
	rest := b[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 {
		return "", "", fmt.Errorf("watch event without a NUL-terminated token: %w", ErrProtocol)
	}
	return string(b[:i]), string(rest[:j]), nil
}

// parseErrno decodes an ERROR payload ("ENOENT\0"): an errno name, E
// followed by 1-15 upper-case letters or digits.
func parseErrno(b []byte) (string, error) {
	s := trimNUL(b)
	ok := len(s) >= 2 && len(s) <= 16 && s[0] == 'E'
	for i := 1; ok && i < len(s); i++ {
		ok = (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')
	}
	if !ok {
		return "", fmt.Errorf("error reply %.32q is not an errno name: %w", b, ErrProtocol)
	}
	return s, nil
}

// dirPart is one DIRECTORY_PART reply: "gen\0" then NUL-terminated names,
// and an extra NUL (an empty name) after the last part.
type dirPart struct {
	gen   string
	names []string
	size  int  // bytes of names, the offset to ask for next
	last  bool // the list is complete
}

func parseDirPart(b []byte) (dirPart, error) {
	i := bytes.IndexByte(b, 0)
	if i <= 0 {
		return dirPart{}, fmt.Errorf("DIRECTORY_PART reply without a generation: %w", ErrProtocol)
	}
	p := dirPart{gen: string(b[:i])}
	if _, err := strconv.ParseUint(p.gen, 10, 64); err != nil {
		return dirPart{}, fmt.Errorf("DIRECTORY_PART generation %.24q: %w", p.gen, ErrProtocol)
	}
	rest := b[i+1:]
	for len(rest) > 0 {
		j := bytes.IndexByte(rest, 0)
		if j < 0 {
			return dirPart{}, fmt.Errorf("DIRECTORY_PART name without NUL: %w", ErrProtocol)
		}
		if j == 0 { // the empty name that ends the list
			if len(rest) != 1 {
				return dirPart{}, fmt.Errorf("DIRECTORY_PART data after the end of the list: %w", ErrProtocol)
			}
			p.last = true
			break
		}
		p.names = append(p.names, string(rest[:j]))
		p.size += j + 1
		rest = rest[j+1:]
	}
	if !p.last && p.size == 0 {
		return dirPart{}, fmt.Errorf("DIRECTORY_PART reply with neither names nor end: %w", ErrProtocol)
	}
	return p, nil
}

// parsePerms decodes a GET_PERMS reply: one or more NUL-terminated
// permission strings.
func parsePerms(b []byte) ([]Perm, error) {
	var perms []Perm
	for _, s := range splitNames(b) {
		p, err := ParsePerm(s)
		if err != nil {
			return nil, fmt.Errorf("GET_PERMS reply: %w (%w)", ErrProtocol, err)
		}
		perms = append(perms, p)
	}
	if len(perms) == 0 {
		return nil, fmt.Errorf("GET_PERMS reply without permissions: %w", ErrProtocol)
	}
	return perms, nil
}
