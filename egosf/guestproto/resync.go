package guestproto

// Resync skips input up to the start of the next frame (its magic and
// version), so that a reader of a long-lived channel can go on after a
// malformed frame. Whatever the failed Read consumed is lost; the peer
// retries (sfld re-sends hello and learns the agent's pending requests).
func (r *Reader) Resync() error {
	for {
		b, err := r.r.Peek(len(magic) + 1)
		if len(b) == len(magic)+1 && [3]byte(b[:3]) == magic && b[3] == Version {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := r.r.Discard(1); err != nil {
			return err
		}
	}
}
