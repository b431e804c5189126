#!/usr/bin/env python3
"""Request clone slots from SnowFlock's allocator, print them, give them back.

    pip install bindings/python
    python3 contrib/examples/python/slots.py [CONFIG]   # CONFIG: a snowflock.yaml
"""
import sys

import egosf

config = sys.argv[1] if len(sys.argv) > 1 else None  # None: the default configuration
with egosf.Handle(config) as h:
    # 1 to 2 slots, waiting at most 30 s, on a 10-minute lease.
    with h.request(2, min=1, timeout=30, lease=600, name="slots-example") as t:
        print(f"ticket {t.id}: {t.granted} slot(s)")
        for s in t.slots:
            print(f"  {s.host} ({s.address}): {s.count}")
        # ... start work on those hosts ...
    print(f"released {t.id}")
