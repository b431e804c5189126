package clonesvc

import (
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// The service's durable state: one record per VM, ticket and checkpoint,
// kept in state_dir/sfld/sfld.db (bbolt, JSON values, buckets "vms",
// "tickets", "checkpoints", "meta"). Each record is written before the
// action it describes takes effect (a VM's record exists, in state
// "starting", before its process does), so that a restarted sfld finds
// everything an earlier one began and either reattaches to it or cleans it
// up. stateFormat changes on any incompatible change.
const stateFormat = 1

// VM states.
const (
	StateStarting = "starting" // record written, process not yet confirmed
	StateRunning  = "running"  // process up
	StateReady    = "ready"    // the guest agent answered
)

// VM roles.
const (
	RoleRoot  = "root"  // started by StartVM
	RoleClone = "clone" // started from a checkpoint
)

// VMRecord is one VM as stored.
type VMRecord struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Hostname string    `json:"hostname"`
	Role     string    `json:"role"`
	State    string    `json:"state"`
	Dir      string    `json:"dir"`
	Console  string    `json:"console,omitempty"`
	Spec     VMSpec    `json:"spec"`
	Created  time.Time `json:"created"`
	// Backend is the backend's record; nil until the process is up.
	Backend *Record `json:"backend,omitempty"`

	// Clones only.
	Parent string `json:"parent,omitempty"`
	// ParentHost is the parent's host's address when it is another host:
	// the clone's end is reported there.
	ParentHost string  `json:"parent_host,omitempty"`
	Ticket     string  `json:"ticket,omitempty"`
	CloneID    int     `json:"clone_id,omitempty"`
	Family     string  `json:"family,omitempty"`
	StartMS    float64 `json:"start_ms,omitempty"`
	// FetchedBytes is what this host fetched of the clone's family's
	// memory from its parent's host (filled when listed, not stored).
	FetchedBytes uint64 `json:"-"`
	// Resume is the reply the clone's agent is waiting for (to the clone or
	// checkpoint_parent request it was cloned inside); sent once the
	// channel is up, then cleared.
	Resume *guestproto.Message `json:"resume,omitempty"`
}

// Ticket states.
const (
	TicketIssued  = "issued"  // granted, not yet used
	TicketCloning = "cloning" // clones being created
	TicketActive  = "active"  // clones running
)

// TicketRecord is a grant of clone slots to one VM.
type TicketRecord struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// Allocation is the allocator's allocation ID; empty when the ticket
	// needs no slots (n = 1).
	Allocation string `json:"allocation,omitempty"`
	Granted    int    `json:"granted"`
	State      string `json:"state"`
	Family     string `json:"family,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	// Slots are the allocation's slots: where the clones go.
	Slots []allocator.Slot `json:"slots,omitempty"`
	// Clones are the running clones' VM IDs; Remote describes those on
	// other hosts.
	Clones []string             `json:"clones,omitempty"`
	Remote map[string]RemoteRef `json:"remote,omitempty"`
	Exits  []Exit               `json:"exits,omitempty"`
	// MemoryBytesSent is what this host's memory server sent for the
	// ticket's family so far (filled when listed, not stored).
	MemoryBytesSent uint64    `json:"-"`
	Created         time.Time `json:"created"`
}

// Exit is one clone's end.
type Exit = guestproto.Exit

// CheckpointRecord is a frozen VM that clones start from.
type CheckpointRecord struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	Dir   string `json:"dir"`
	// Request is the guest request the checkpoint was made inside
	// (checkpoint_parent or clone); clones resume answering it.
	Request uint64 `json:"request,omitempty"`
	Op      string `json:"op,omitempty"`
	// Ticket is set for a checkpoint made by clone: it lives as long as
	// that ticket. Others live until deleted or their owner stops.
	Ticket     string      `json:"ticket,omitempty"`
	Family     string      `json:"family"`
	Key        []byte      `json:"key"`
	Checkpoint *Checkpoint `json:"checkpoint"`
	Descriptor string      `json:"descriptor"`
	// MemoryServer is where the family's memory server listened (once it
	// served clones on other hosts): a restarted sfld serves it there
	// again, so that those clones keep fetching.
	MemoryServer string    `json:"memory_server,omitempty"`
	DescBytes    int64     `json:"desc_bytes"`
	DescMS       float64   `json:"desc_ms"`
	Created      time.Time `json:"created"`
}

// RemoteRef is a clone of this host's ticket running on another host.
type RemoteRef struct {
	Address string `json:"address"` // its host's daemon API
	CloneID int    `json:"clone_id"`
}
