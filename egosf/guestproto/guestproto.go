// Package guestproto is the wire format of the SnowFlock guest API: the
// frames a program inside a VM exchanges with the in-guest agent (over a
// unix socket) and the agent with sfld (over the VM's guest channel).
//
// A frame is an envelope — magic "SFG", format version, payload length,
// CRC-32C of the payload — around one JSON Message. Requests carry an ID
// chosen by the sender; the reply echoes it. A reply to "clone" reaches the
// parent with CloneID 0 and each clone (on its own channel, after it
// resumed inside the same call) with its CloneID and Identity.
package guestproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Version is the frame format's version. A reader refuses other versions.
const Version = 1

// MaxPayload caps a frame's payload; a reader refuses longer frames before
// reading them.
const MaxPayload = 256 << 10

// MaxResult caps the result a clone passes to sf_exit.
const MaxResult = 16 << 10

const headerSize = 12

var magic = [3]byte{'S', 'F', 'G'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFrame marks a malformed frame: bad magic, version, length or checksum.
var ErrFrame = errors.New("malformed guest frame")

// Operations (Message.Op of a request).
const (
	OpHello            = "hello"             // sfld → agent on every (re)connect → Agent, Pending
	OpRequestTicket    = "request_ticket"    // N → Ticket, Granted
	OpClone            = "clone"             // Ticket → CloneID (0 parent, 1..m-1 clones)
	OpCheckpointParent = "checkpoint_parent" // → Checkpoint, CloneID
	OpCreateClones     = "create_clones"     // Checkpoint, Ticket → Granted
	OpExit             = "exit"              // Result (clones only)
	OpJoin             = "join"              // Ticket → Exits
	OpKill             = "kill"              // Ticket
	OpRelease          = "release"           // Ticket: give back an unused ticket
	OpWhoAmI           = "whoami"            // → VM, Family, CloneID

	// OpExec (sfld → agent): run Args in the guest (output also copied to
	// the console) → ExitCode, Output. Used by operators (sfctl vm exec)
	// and tests. The agent refuses requests it cannot receive (hello and
	// exec come only from sfld; sfld refuses them from a guest).
	OpExec = "exec"
	// OpIdentity (sfld → agent): take on Identity (hostname, RNG reseed).
	// Sent to clones made without the guest's cooperation (sfctl clone).
	OpIdentity = "identity"
)

// Message is one request or reply. Fields not used by an operation are
// left empty.
type Message struct {
	ID    uint64 `json:"id"`
	Op    string `json:"op,omitempty"`
	Reply bool   `json:"reply,omitempty"`

	// Request arguments.
	N          int      `json:"n,omitempty"`
	Ticket     string   `json:"ticket,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`
	Result     []byte   `json:"result,omitempty"`
	Agent      string   `json:"agent,omitempty"`   // hello reply: agent version
	Pending    []uint64 `json:"pending,omitempty"` // hello reply: IDs of the agent's requests awaiting a reply
	Args       []string `json:"args,omitempty"`    // exec

	// Reply fields.
	Error    *Error    `json:"error,omitempty"`
	Granted  int       `json:"granted,omitempty"`
	CloneID  int       `json:"clone_id,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
	Exits    []Exit    `json:"exits,omitempty"`
	VM       string    `json:"vm,omitempty"`
	Family   string    `json:"family,omitempty"`
	Timing   *Timing   `json:"timing,omitempty"`    // clone, create_clones
	ExitCode int       `json:"exit_code,omitempty"` // exec
	Output   []byte    `json:"output,omitempty"`    // exec: stdout+stderr, capped at MaxOutput
}

// MaxOutput caps the output an exec reply carries (the rest is cut).
const MaxOutput = 128 << 10

// Identity is what a clone takes on when it resumes.
type Identity struct {
	Hostname string `json:"hostname"`
	// Seed is fresh randomness the agent mixes into the kernel's RNG and
	// reseeds it with, so that clones' random numbers differ.
	Seed []byte `json:"seed"`
}

// Timing is how long a clone operation's steps took, as sfld measured
// them.
type Timing struct {
	// CheckpointMS is the whole checkpoint; PauseMS the part the parent's
	// vCPUs were stopped.
	CheckpointMS float64 `json:"checkpoint_ms"`
	PauseMS      float64 `json:"pause_ms"`
	// DescriptorMS is the time to encode and write the descriptor.
	DescriptorMS    float64 `json:"descriptor_ms"`
	DescriptorBytes int64   `json:"descriptor_bytes"`
	// CloneStartMS is each clone's launch→running time, by clone ID - 1.
	CloneStartMS []float64 `json:"clone_start_ms,omitempty"`
	// TotalMS is from the request's arrival to the reply.
	TotalMS float64 `json:"total_ms"`
}

// Exit is one clone's end, reported by sf_join.
type Exit struct {
	CloneID int    `json:"clone_id"`
	Result  []byte `json:"result,omitempty"`
	// Killed is set when the clone did not call sf_exit (it died, or its
	// VM failed) — Reason says why.
	Killed bool   `json:"killed,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Write writes m as one frame.
func Write(w io.Writer, m *Message) error {
	payload, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode guest message: %w", err)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("guest message of %d bytes exceeds %d: %w", len(payload), MaxPayload, ErrFrame)
	}
	buf := make([]byte, headerSize+len(payload))
	copy(buf, magic[:])
	buf[3] = Version
	binary.BigEndian.PutUint32(buf[4:], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[8:], crc32.Checksum(payload, castagnoli))
	copy(buf[headerSize:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write guest frame: %w", err)
	}
	return nil
}

// Reader reads frames from a stream.
type Reader struct {
	r *bufio.Reader
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Read returns the next message. It returns io.EOF at a clean end of
// stream and an error wrapping ErrFrame for malformed input, after which
// the stream cannot be trusted to be in step and should be closed.
func (r *Reader) Read() (*Message, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("truncated frame header: %w", ErrFrame)
		}
		return nil, err
	}
	return readBody(r.r, h)
}

func readBody(r io.Reader, h [headerSize]byte) (*Message, error) {
	if [3]byte(h[:3]) != magic {
		return nil, fmt.Errorf("bad magic %q: %w", h[:3], ErrFrame)
	}
	if h[3] != Version {
		return nil, fmt.Errorf("frame version %d, this side speaks %d: %w", h[3], Version, ErrFrame)
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > MaxPayload {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d: %w", n, MaxPayload, ErrFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("truncated frame payload: %w (%w)", ErrFrame, err)
	}
	if sum := crc32.Checksum(payload, castagnoli); sum != binary.BigEndian.Uint32(h[8:]) {
		return nil, fmt.Errorf("frame checksum mismatch: %w", ErrFrame)
	}
	m := new(Message)
	if err := json.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("frame payload: %w (%w)", ErrFrame, err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// validate checks what a receiver relies on before acting on a message.
func (m *Message) validate() error {
	if len(m.Result) > MaxResult {
		return fmt.Errorf("result of %d bytes exceeds %d: %w", len(m.Result), MaxResult, ErrFrame)
	}
	if !m.Reply {
		switch m.Op {
		case OpHello, OpRequestTicket, OpClone, OpCheckpointParent, OpCreateClones,
			OpExit, OpJoin, OpKill, OpRelease, OpWhoAmI, OpExec, OpIdentity:
		default:
			return fmt.Errorf("unknown operation %q: %w", m.Op, ErrFrame)
		}
	}
	return nil
}
