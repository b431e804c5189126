#!/usr/bin/env python3
"""The SnowFlock guest API from Python: fork this VM into up to 4 VMs, let
each clone compute a part, collect their results. Outside a SnowFlock guest
it prints why it cannot (exit status 2)."""
import sys

import egosf

try:
    ticket, granted = egosf.request_ticket(4)
    cid = egosf.clone(ticket)
    if cid > 0:  # a clone: do its share, hand back a result, end
        egosf.exit(f"clone {cid} of {granted} done".encode())
    for e in egosf.join(ticket):
        print(f"clone {e.clone_id}:", f"killed: {e.reason}" if e.killed else e.result.decode())
except egosf.NotInGuest as e:
    print(f"guest: {e}", file=sys.stderr)
    sys.exit(2)
