package plugin

import (
	"time"

	"github.com/snowflock/snowflock/allocator"
	pb "github.com/snowflock/snowflock/allocator/plugin/proto"
)

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func slotsToPB(in []allocator.Slot) []*pb.Slot {
	out := make([]*pb.Slot, len(in))
	for i, s := range in {
		out[i] = &pb.Slot{Host: s.Host, Address: s.Address, Count: int64(s.Count)}
	}
	return out
}

func slotsFromPB(in []*pb.Slot) []allocator.Slot {
	if len(in) == 0 {
		return nil
	}
	out := make([]allocator.Slot, len(in))
	for i, s := range in {
		out[i] = allocator.Slot{Host: s.GetHost(), Address: s.GetAddress(), Count: int(s.GetCount())}
	}
	return out
}

func allocationToPB(a *allocator.Allocation) *pb.Allocation {
	if a == nil {
		return nil
	}
	return &pb.Allocation{
		Id: a.ID, Backend: a.Backend, Granted: int64(a.Granted), Slots: slotsToPB(a.Slots),
		Name: a.Name, Consumer: a.Consumer, Exclusive: a.Exclusive,
		CreatedUnixNano: unixNano(a.Created), ExpiresUnixNano: unixNano(a.Expires),
	}
}

func allocationFromPB(a *pb.Allocation) *allocator.Allocation {
	if a == nil {
		return nil
	}
	return &allocator.Allocation{
		ID: a.GetId(), Backend: a.GetBackend(), Granted: int(a.GetGranted()), Slots: slotsFromPB(a.GetSlots()),
		Name: a.GetName(), Consumer: a.GetConsumer(), Exclusive: a.GetExclusive(),
		Created: fromUnixNano(a.GetCreatedUnixNano()), Expires: fromUnixNano(a.GetExpiresUnixNano()),
	}
}

func eventToPB(e allocator.Event) *pb.Event {
	return &pb.Event{
		Kind: string(e.Kind), AllocationId: e.AllocationID, Slots: slotsToPB(e.Slots), Reason: e.Reason,
		DeadlineUnixNano: unixNano(e.Deadline), TimeUnixNano: unixNano(e.Time),
	}
}

func eventFromPB(e *pb.Event) allocator.Event {
	return allocator.Event{
		Kind: allocator.EventKind(e.GetKind()), AllocationID: e.GetAllocationId(), Slots: slotsFromPB(e.GetSlots()),
		Reason: e.GetReason(), Deadline: fromUnixNano(e.GetDeadlineUnixNano()), Time: fromUnixNano(e.GetTimeUnixNano()),
	}
}

func requestToPB(r allocator.Request, token string) *pb.RequestRequest {
	return &pb.RequestRequest{
		Min: int64(r.Min), Max: int64(r.Max), Name: r.Name, Consumer: r.Consumer, Resreq: r.ResReq,
		Exclusive: r.Exclusive, Immediate: r.Immediate, LeaseNanos: int64(r.Lease), Token: token,
	}
}

func requestFromPB(r *pb.RequestRequest) allocator.Request {
	return allocator.Request{
		Min: clampInt(r.GetMin()), Max: clampInt(r.GetMax()), Name: r.GetName(), Consumer: r.GetConsumer(),
		ResReq: r.GetResreq(), Exclusive: r.GetExclusive(), Immediate: r.GetImmediate(), Lease: time.Duration(r.GetLeaseNanos()),
	}
}

// clampInt keeps int64 counts from the wire inside int (they are validated
// by the backend afterwards).
func clampInt(n int64) int {
	const maxInt = int64(^uint(0) >> 1)
	switch {
	case n > maxInt:
		return int(maxInt)
	case n < -maxInt:
		return -int(maxInt)
	}
	return int(n)
}
