package main

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/snowflock/snowflock/allocator/static"
)

// parseHostfile reads Open MPI hostfile lines, "host [slots=N]" (N
// defaults to 1), ignoring blank lines and # comments. The host name is
// also its address.
func parseHostfile(text []byte) (static.HostList, error) {
	var hosts static.HostList
	sc := bufio.NewScanner(bytes.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		h := static.Host{Name: fields[0], Address: fields[0], Slots: 1}
		for _, f := range fields[1:] {
			v, ok := strings.CutPrefix(f, "slots=")
			if !ok {
				continue // other Open MPI keys (max_slots=) do not matter here
			}
			s, err := strconv.Atoi(v)
			if err != nil || s < 1 {
				return nil, fmt.Errorf("line %d: slots=%q: want a whole number of at least 1", n, v)
			}
			h.Slots = s
		}
		hosts = append(hosts, h)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("names no host")
	}
	return hosts, nil
}
