package clonesvc

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
)

// DescriptorFile is the name of a checkpoint's VM descriptor in its
// directory.
const DescriptorFile = "descriptor.sfd"

// writeDescriptor writes checkpoint rec's VM descriptor (device state,
// machine, memory layout with zero pages, family identity and key) into
// its directory and returns its size. It is what a clone on another host
// starts from; local clones read the same files directly.
func (s *Service) writeDescriptor(rec *CheckpointRecord) (int64, error) {
	cp := rec.Checkpoint
	state, err := os.ReadFile(cp.DeviceState)
	if err != nil {
		return 0, fmt.Errorf("descriptor: device state: %w", err)
	}
	d := &descriptor.Descriptor{
		FamilyID: rec.Family, ParentVM: rec.Owner, CheckpointID: rec.ID, Created: rec.Created,
		Backend: cp.Backend, Machine: cp.Machine, DeviceState: state,
	}
	if len(rec.Key) != descriptor.KeySize {
		return 0, fmt.Errorf("descriptor: family key of %d bytes: %w", len(rec.Key), ErrInvalidArgument)
	}
	copy(d.FamilyKey[:], rec.Key)
	for _, m := range cp.Memory {
		d.Regions = append(d.Regions, descriptor.Region{Name: m.Name, Size: m.Size, PageSize: m.PageSize, Zero: m.Zero})
	}
	rec.Descriptor = filepath.Join(rec.Dir, DescriptorFile)
	if err := descriptor.Write(rec.Descriptor, d); err != nil {
		return 0, fmt.Errorf("descriptor: %w", err)
	}
	fi, err := os.Stat(rec.Descriptor)
	if err != nil {
		return 0, fmt.Errorf("descriptor: %w", err)
	}
	return fi.Size(), nil
}

// checkDescriptor reads checkpoint rec's descriptor back before clones
// start from it: a damaged or substituted descriptor stops the clone with
// a clear error instead of starting a VM from the wrong state.
func checkDescriptor(rec *CheckpointRecord) error {
	d, err := descriptor.Read(rec.Descriptor)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", rec.ID, err)
	}
	if d.CheckpointID != rec.ID || d.FamilyID != rec.Family || d.ParentVM != rec.Owner {
		return fmt.Errorf("checkpoint %s: descriptor %s describes checkpoint %s of %s: %w",
			rec.ID, rec.Descriptor, d.CheckpointID, d.ParentVM, ErrInvalidArgument)
	}
	return nil
}
