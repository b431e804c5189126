package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"

	"github.com/snowflock/snowflock/internal/xenstore"
)

// Domains are found through xenstore, as libxl does (libxl_name_to_domid):
// /local/domain/<domid>/name holds each running domain's name. That
// answers in milliseconds where `xl domid` takes a third of a second.

func domainPath(domid uint32) string { return "/local/domain/" + strconv.FormatUint(uint64(domid), 10) }

// domainNamed returns the domid of the domain called name; ok is false
// when there is none.
func domainNamed(ctx context.Context, xs *xenstore.Client, name string) (domid uint32, ok bool, err error) {
	ids, err := xs.Directory(ctx, "/local/domain")
	if err != nil {
		return 0, false, fmt.Errorf("list domains: %w", err)
	}
	for _, s := range ids {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 {
			continue
		}
		got, err := xs.Read(ctx, domainPath(uint32(n))+"/name")
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("domain %d: %w", n, err)
		}
		if string(got) == name {
			return uint32(n), true, nil
		}
	}
	return 0, false, nil
}

// domainIs reports whether domid is still the domain called name.
func domainIs(ctx context.Context, xs *xenstore.Client, domid uint32, name string) (bool, error) {
	got, err := xs.Read(ctx, domainPath(domid)+"/name")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("domain %d: %w", domid, err)
	}
	return string(got) == name, nil
}
