// Package wire is every detail of how SnowFlock talks to Platform EGO over
// REST: paths, headers, field names and message shapes, with their sources,
// and the parsers of EGO's replies. It is the one place to check against a
// real cluster; the EGO simulator (contrib/egosim) serves these same shapes.
//
// # Sources
//
//   - [REST] IBM Spectrum Symphony 7.3.2, "RESTful API reference for EGO
//     (resource management and deployment)": base path
//     /platform/rest/ego/v1/, versioned by the /v1 suffix; logon by
//     GET auth/logon with HTTP Basic credentials, answered with a CSRF token
//     and a session cookie; processes started by EGO authenticate with
//     "Authorization: PlatformToken token=…".
//   - [WS] Platform EGO 1.2.3 reference, Web Services: RegistrationService
//     (Register: ClientName, description, answered with the client's
//     current AllocationInfo so a restarted client recovers them;
//     Unregister releases everything), AllocationService (RequestAllocation:
//     ClientName, AllocationSpecification {consumer, resource group,
//     resource requirement, min/max resources}, option EGO_ALLOC_EXCLUSIVE;
//     ModifyAllocation; CancelAllocation; ReleaseResource), and
//     NotificationService (AddResource: allocation ID, consumer, resources
//     with a "slots" attribute; ReclaimResource: the same, to be given
//     back).
//   - [C] Platform EGO C API (vem.h): vem_register with a time-to-live,
//     vem_alloc, asynchronous RESOURCE_ADD and RESOURCE_RECLAIM messages
//     (the reclaim carries a timeout after which EGO kills the
//     containers), vem_release with AUTOADJ (a partial release lowers the
//     allocation's demand so EGO does not give the slots back).
//
// # What is verified and what is not
//
// Base path, logon and the PlatformToken header are as documented [REST].
// The allocation resources below (clients, allocations, notifications) are
// SnowFlock's JSON rendering of the documented operations [WS][C]: same
// operations, same fields, same semantics; their exact REST paths and JSON
// spellings have not been checked against a real cluster, which is why they
// all live in this file. Notifications are fetched by long polling, since
// a REST client has no endpoint for EGO to call.
package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// BasePath prefixes every path below [REST].
const BasePath = "/platform/rest/ego/v1/"

// Paths, relative to BasePath. %s are path-escaped names or IDs.
const (
	// PathLogon: GET with Basic credentials; answers LogonReply and sets the
	// session cookie [REST].
	PathLogon = "auth/logon"
	// PathLogoff: GET ends the session [REST].
	PathLogoff = "auth/logoff"
	// PathConsumer: GET ?path=CONSUMER_PATH answers Consumer; 404 if none.
	PathConsumer = "consumers"
	// PathResourceGroup: GET answers ResourceGroup; 404 if none.
	PathResourceGroup = "resourcegroups/%s"
	// PathClients: POST RegisterRequest answers RegisterReply [WS Register, C vem_register].
	PathClients = "clients"
	// PathClient: DELETE unregisters, releasing every allocation [WS Unregister].
	PathClient = "clients/%s"
	// PathClientAllocations: POST AllocationRequest answers AllocationCreated
	// [WS RequestAllocation, C vem_alloc]; GET answers AllocationList.
	PathClientAllocations = "clients/%s/allocations"
	// PathNotifications: GET ?after=SEQ&wait=SECONDS answers
	// NotificationList, waiting up to wait seconds for one past after.
	PathNotifications = "clients/%s/notifications"
	// PathAllocation: GET answers Allocation; DELETE cancels it, releasing
	// all its slots [WS CancelAllocation].
	PathAllocation = "allocations/%s"
	// PathAllocationRelease: POST ReleaseRequest gives back some slots and
	// lowers the allocation's demand to what it still holds (AUTOADJ), so
	// EGO adds no more [WS ReleaseResource, C vem_release]; answers
	// Allocation.
	PathAllocationRelease = "allocations/%s/release"
)

// Headers.
const (
	// HeaderCSRF carries LogonReply.CSRFToken on every call after logon.
	HeaderCSRF = "X-CSRF-Token"
	// PlatformTokenScheme is the Authorization scheme of EGO-issued tokens:
	// "PlatformToken token=<token>" [REST].
	PlatformTokenScheme = "PlatformToken token="
)

// Query parameters.
const (
	QueryConsumerPath = "path"
	QueryAfter        = "after"
	QueryWait         = "wait"
)

// Notification types [C RESOURCE_ADD / RESOURCE_RECLAIM; WS AddResource /
// ReclaimResource]. AllocationEnded is EGO freeing an allocation on its own
// (the client's time-to-live ran out, an administrator's egosh alloc free).
const (
	ResourceAdd     = "RESOURCE_ADD"
	ResourceReclaim = "RESOURCE_RECLAIM"
	AllocationEnded = "ALLOCATION_ENDED"
)

// Allocation states.
const (
	StatePending   = "PENDING"   // no slot yet
	StateAllocated = "ALLOCATED" // at least one slot
)

// MaxReply caps the bytes read of any reply.
const MaxReply = 4 << 20

// LogonReply answers PathLogon.
type LogonReply struct {
	CSRFToken string `json:"csrftoken"`
}

// Error is the body of every non-2xx reply.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Consumer answers PathConsumer.
type Consumer struct {
	Path           string   `json:"consumerpath"`
	ResourceGroups []string `json:"resourcegroups"`
}

// Host is a host of a resource group.
type Host struct {
	Name string `json:"hostname"`
	// Address is the host's IP address; EGO may omit it, and then the host
	// name is the address.
	Address string `json:"address,omitempty"`
	Slots   int    `json:"slots"`
}

// ResourceGroup answers PathResourceGroup.
type ResourceGroup struct {
	Name  string `json:"name"`
	Hosts []Host `json:"hosts"`
}

// RegisterRequest is the body of POST PathClients.
type RegisterRequest struct {
	ClientName  string `json:"clientname"`
	Description string `json:"description,omitempty"`
	// TTL is how long EGO keeps the client's allocations after it was last
	// heard from, in seconds [C vem_register].
	TTL int64 `json:"ttl"`
}

// RegisterReply answers POST PathClients: the client's allocations (a
// restarted client recovers them) and the sequence number of its latest
// notification.
type RegisterReply struct {
	ClientName  string       `json:"clientname"`
	Allocations []Allocation `json:"allocations"`
	LastSeq     int64        `json:"lastseq"`
}

// AllocationRequest is the body of POST PathClientAllocations
// [WS AllocationSpecification].
type AllocationRequest struct {
	// Name is the allocation's name: SnowFlock puts its request token there
	// so that a restarted client can find a request it never finished.
	Name          string `json:"name"`
	Description   string `json:"description,omitempty"`
	Consumer      string `json:"consumer"`
	ResourceGroup string `json:"resourcegroup"`
	ResReq        string `json:"resreq,omitempty"`
	MinSlots      int    `json:"minslots"`
	MaxSlots      int    `json:"maxslots"`
	// Exclusive is EGO_ALLOC_EXCLUSIVE.
	Exclusive bool `json:"exclusive,omitempty"`
}

// AllocationCreated answers POST PathClientAllocations.
type AllocationCreated struct {
	ID string `json:"allocationid"`
}

// Resource is some slots on one host.
type Resource struct {
	Host    string `json:"hostname"`
	Address string `json:"address,omitempty"`
	Slots   int    `json:"slots"`
}

// Allocation answers PathAllocation.
type Allocation struct {
	ID            string     `json:"allocationid"`
	ClientName    string     `json:"clientname"`
	Name          string     `json:"name"`
	Description   string     `json:"description,omitempty"`
	Consumer      string     `json:"consumer"`
	ResourceGroup string     `json:"resourcegroup"`
	MinSlots      int        `json:"minslots"`
	MaxSlots      int        `json:"maxslots"`
	Exclusive     bool       `json:"exclusive,omitempty"`
	State         string     `json:"state"`
	Resources     []Resource `json:"resources"`
	Created       time.Time  `json:"created"`
}

// AllocationList answers GET PathClientAllocations.
type AllocationList struct {
	Allocations []Allocation `json:"allocations"`
}

// ReleaseRequest is the body of POST PathAllocationRelease.
type ReleaseRequest struct {
	Resources []Resource `json:"resources"`
}

// Notification is one message to a client [C RESOURCE_ADD,
// RESOURCE_RECLAIM].
type Notification struct {
	Seq          int64      `json:"seq"`
	Type         string     `json:"type"`
	AllocationID string     `json:"allocationid"`
	Resources    []Resource `json:"resources"`
	// Deadline of a reclaim: EGO takes the slots then, released or not.
	Deadline time.Time `json:"deadline,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// NotificationList answers PathNotifications.
type NotificationList struct {
	Notifications []Notification `json:"notifications"`
	LastSeq       int64          `json:"lastseq"`
}

// URL joins base (scheme://host[:port], with or without BasePath) and a
// path built from one of the Path constants.
func URL(base, path string, args ...string) (string, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("EGO URL %q: want http(s)://host[:port]", base)
	}
	esc := make([]any, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(a)
	}
	p := strings.TrimSuffix(u.Path, "/") + "/"
	if !strings.HasSuffix(p, BasePath) {
		p = strings.TrimSuffix(p, "/") + BasePath
	}
	return u.Scheme + "://" + u.Host + p + fmt.Sprintf(path, esc...), nil
}

// Decode reads one JSON reply (at most MaxReply bytes) into v and checks it
// with check. Anything else — too long, not JSON, trailing bytes, values
// out of range — is an error saying what was wrong.
func Decode[T any](r io.Reader, check func(*T) error) (*T, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxReply+1))
	if err != nil {
		return nil, fmt.Errorf("reading reply: %w", err)
	}
	if len(data) > MaxReply {
		return nil, fmt.Errorf("reply longer than %d bytes", MaxReply)
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("reply is not the expected JSON: %w", err)
	}
	if check != nil {
		if err := check(&v); err != nil {
			return nil, fmt.Errorf("reply: %w", err)
		}
	}
	return &v, nil
}

// Reply checks, for Decode.

// CheckLogon requires a CSRF token.
func CheckLogon(v *LogonReply) error {
	if v.CSRFToken == "" {
		return fmt.Errorf("logon reply has no csrftoken")
	}
	return nil
}

// CheckResources checks a list of resources: named hosts, each once, with
// 1 to 1<<20 slots.
func CheckResources(rs []Resource) error {
	seen := map[string]bool{}
	for _, r := range rs {
		switch {
		case r.Host == "" || len(r.Host) > 255:
			return fmt.Errorf("resource with a host name of %d bytes", len(r.Host))
		case r.Slots <= 0 || r.Slots > 1<<20:
			return fmt.Errorf("host %s: %d slots", r.Host, r.Slots)
		case seen[r.Host]:
			return fmt.Errorf("host %s listed twice", r.Host)
		}
		seen[r.Host] = true
	}
	return nil
}

// CheckAllocation checks an allocation.
func CheckAllocation(a *Allocation) error {
	if a.ID == "" {
		return fmt.Errorf("allocation without allocationid")
	}
	if a.MinSlots < 0 || a.MaxSlots < 0 {
		return fmt.Errorf("allocation %s: negative slot bounds", a.ID)
	}
	if err := CheckResources(a.Resources); err != nil {
		return fmt.Errorf("allocation %s: %w", a.ID, err)
	}
	return nil
}

// CheckAllocationList checks every allocation of a list.
func CheckAllocationList(l *AllocationList) error {
	for i := range l.Allocations {
		if err := CheckAllocation(&l.Allocations[i]); err != nil {
			return err
		}
	}
	return nil
}

// CheckRegister checks a registration reply.
func CheckRegister(r *RegisterReply) error {
	if r.ClientName == "" {
		return fmt.Errorf("registration reply without clientname")
	}
	if r.LastSeq < 0 {
		return fmt.Errorf("negative lastseq %d", r.LastSeq)
	}
	return CheckAllocationList(&AllocationList{Allocations: r.Allocations})
}

// CheckCreated requires an allocation ID.
func CheckCreated(c *AllocationCreated) error {
	if c.ID == "" {
		return fmt.Errorf("no allocationid")
	}
	return nil
}

// CheckResourceGroup checks a resource group's hosts.
func CheckResourceGroup(g *ResourceGroup) error {
	rs := make([]Resource, len(g.Hosts))
	for i, h := range g.Hosts {
		rs[i] = Resource{Host: h.Name, Slots: h.Slots}
	}
	if err := CheckResources(rs); err != nil {
		return fmt.Errorf("resource group %s: %w", g.Name, err)
	}
	return nil
}

// CheckNotifications checks a notification list: known types, increasing
// sequence numbers, valid resources.
func CheckNotifications(l *NotificationList) error {
	last := int64(-1)
	for _, n := range l.Notifications {
		switch n.Type {
		case ResourceAdd, ResourceReclaim, AllocationEnded:
		default:
			return fmt.Errorf("notification %d of unknown type %q", n.Seq, n.Type)
		}
		if n.Seq <= last || n.Seq < 0 {
			return fmt.Errorf("notification sequence numbers out of order at %d", n.Seq)
		}
		last = n.Seq
		if n.AllocationID == "" {
			return fmt.Errorf("notification %d names no allocation", n.Seq)
		}
		if err := CheckResources(n.Resources); err != nil {
			return fmt.Errorf("notification %d: %w", n.Seq, err)
		}
	}
	if l.LastSeq < last {
		return fmt.Errorf("lastseq %d before notification %d", l.LastSeq, last)
	}
	return nil
}
