package static

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// The pool database (state_dir/static.db, bbolt) holds these buckets:
//
//	meta        "format" → formatMajor as decimal text
//	            "pool"   → the pool's hosts (JSON): every process sharing
//	                       the database must be configured with the same pool
//	allocations ID → record (JSON)
//	waiters     sequence (8 bytes, big-endian) → waiter (JSON): requests
//	            waiting for slots, served first come first served
//	events      sequence (8 bytes, big-endian) → allocator.Event (JSON)
//
// formatMajor changes on any incompatible change; a database of another major
// version is refused rather than misread.
const formatMajor = 1

var (
	bucketMeta        = []byte("meta")
	bucketAllocations = []byte("allocations")
	bucketWaiters     = []byte("waiters")
	bucketEvents      = []byte("events")
	keyFormat         = []byte("format")
	keyPool           = []byte("pool")
)

// record is one allocation as stored.
type record struct {
	Allocation allocator.Allocation `json:"allocation"`
	// ResReq is kept so that `list` can show what was asked for.
	ResReq string `json:"resreq,omitempty"`
}

// waiter is a request waiting for slots. It is dropped when its heartbeat is
// older than waiterStale (its process died). A later request defers to it
// only if their eligible hosts overlap.
type waiter struct {
	Min       int       `json:"min"`
	Tags      []string  `json:"tags,omitempty"`
	Heartbeat time.Time `json:"heartbeat"`
}

// maxEvents bounds the events bucket; older events are dropped.
const maxEvents = 1024

func decodeRecord(id, data []byte) (record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("allocation %q in the pool database is corrupt: %v: %w", id, err, allocator.ErrBackendDown)
	}
	return r, nil
}
