// Package clonesvc is the per-host clone service behind sfld: it owns the
// VMs of its host, records them durably, turns guest API requests into
// tickets (from an allocator) and clones (through a hypervisor Backend), and
// serves the daemon API to sfctl and other hosts.
package clonesvc
