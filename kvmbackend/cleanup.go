package kvmbackend

// cleanup is a stack of undo steps: each step of a VM's start pushes its
// undo; on failure run undoes them in reverse order, on success release
// drops them.
type cleanup struct {
	fns []func()
}

func (c *cleanup) add(f func()) { c.fns = append(c.fns, f) }

// run undoes every step not released, last first.
func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// release keeps everything that was done.
func (c *cleanup) release() { c.fns = nil }
