package xenbackend

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/snowflock/snowflock/internal/xenstore"
)

// A domain's network interface (sfld.xen.bridge): one vif on a dom0
// bridge. Its MAC address is the VM's own, so a clone restored from its
// parent's image gets a new one; Linux's netfront reads the MAC again
// when it reconnects to the new backend after the restore, so the guest
// sees the change.

// vifBackends is where dom0's netback publishes the vifs of every domain
// (<domid>/<devid>/mac).
const vifBackends = "/local/domain/0/backend/vif"

// macFor is candidate n of VM id's MAC: under the Xen project's prefix
// 00:16:3e, which xl uses for the addresses it makes up, with the top
// bit of the fourth byte clear as xl keeps it.
func macFor(id string, n int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "snowflock vif\x00%s\x00%d", id, n))
	return fmt.Sprintf("00:16:3e:%02x:%02x:%02x", h[0]&0x7f, h[1], h[2])
}

// reserveMAC picks VM id's MAC: derived from the id (the same id gets the
// same address while it is free), and unlike every MAC held by another VM
// of this backend or by any domain's vif on this host.
func (b *Backend) reserveMAC(ctx context.Context, id string) (string, error) {
	inUse, err := hostMACs(ctx, b.store())
	if err != nil {
		return "", fmt.Errorf("list the host's vifs: %w", err)
	}
	return b.pickMAC(id, inUse)
}

// pickMAC reserves the first of id's candidate MACs that no VM of the
// backend holds and that is not in inUse.
func (b *Backend) pickMAC(id string, inUse map[string]bool) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for n := 0; n < 1000; n++ {
		mac := macFor(id, n)
		if _, held := b.macs[mac]; !held && !inUse[mac] {
			b.macs[mac] = id
			return mac, nil
		}
	}
	return "", errors.New("no free MAC address after 1000 tries")
}

// releaseMAC frees VM id's MAC.
func (b *Backend) releaseMAC(mac, id string) {
	if mac == "" {
		return
	}
	b.mu.Lock()
	if b.macs[mac] == id {
		delete(b.macs, mac)
	}
	b.mu.Unlock()
}

// hostMACs returns the MACs of every vif that dom0's netback serves.
func hostMACs(ctx context.Context, xs *xenstore.Client) (map[string]bool, error) {
	macs := map[string]bool{}
	doms, err := xs.Directory(ctx, vifBackends)
	if errors.Is(err, fs.ErrNotExist) {
		return macs, nil
	}
	if err != nil {
		return nil, err
	}
	for _, d := range doms {
		devs, err := xs.Directory(ctx, vifBackends+"/"+d)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the domain went away meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, dev := range devs {
			v, err := xs.Read(ctx, vifBackends+"/"+d+"/"+dev+"/mac")
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if hw, err := net.ParseMAC(strings.TrimSpace(string(v))); err == nil {
				macs[hw.String()] = true
			}
		}
	}
	return macs, nil
}

// checkMAC validates a MAC read from a record.
func checkMAC(mac string) error {
	if mac == "" {
		return nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 || hw.String() != mac {
		return fmt.Errorf("MAC %q: want six lower-case hex bytes separated by colons", mac)
	}
	return nil
}
