package xenstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// maxTransactRetries bounds how often Transact redoes a conflicting
// transaction.
const maxTransactRetries = 16

// Tx is a transaction: its reads and writes see and change a private copy
// of the store, which Commit applies unless another change intervened
// (then Commit fails with ErrRetry and the whole transaction must be
// redone). Watches fire only on commit.
type Tx struct {
	c  *Client
	id uint32
}

// Start begins a transaction.
func (c *Client) Start(ctx context.Context) (*Tx, error) {
	b, err := c.call(ctx, XS_TRANSACTION_START, 0, "", []byte{0})
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseUint(trimNUL(b), 10, 32)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("xenstore TRANSACTION_START: transaction ID %.16q: %w", b, ErrProtocol)
	}
	return &Tx{c: c, id: uint32(id)}, nil
}

// ID returns the transaction's ID (the tx_id of its requests).
func (t *Tx) ID() uint32 { return t.id }

// Commit ends the transaction and applies its changes. An error matching
// ErrRetry means another change conflicted: nothing was applied.
func (t *Tx) Commit(ctx context.Context) error {
	_, err := t.c.call(ctx, XS_TRANSACTION_END, t.id, "", []byte("T\x00"))
	return err
}

// Abort ends the transaction and discards its changes.
func (t *Tx) Abort(ctx context.Context) error {
	_, err := t.c.call(ctx, XS_TRANSACTION_END, t.id, "", []byte("F\x00"))
	return err
}

// Read is Client.Read inside the transaction.
func (t *Tx) Read(ctx context.Context, path string) ([]byte, error) {
	return t.c.read(ctx, t.id, path)
}

// Write is Client.Write inside the transaction.
func (t *Tx) Write(ctx context.Context, path string, value []byte) error {
	return t.c.write(ctx, t.id, path, value)
}

// Mkdir is Client.Mkdir inside the transaction.
func (t *Tx) Mkdir(ctx context.Context, path string) error {
	return t.c.simple(ctx, XS_MKDIR, t.id, path)
}

// Remove is Client.Remove inside the transaction.
func (t *Tx) Remove(ctx context.Context, path string) error {
	return t.c.simple(ctx, XS_RM, t.id, path)
}

// Directory is Client.Directory inside the transaction.
func (t *Tx) Directory(ctx context.Context, path string) ([]string, error) {
	return t.c.directory(ctx, t.id, path)
}

// GetPerms is Client.GetPerms inside the transaction.
func (t *Tx) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	return t.c.getPerms(ctx, t.id, path)
}

// SetPerms is Client.SetPerms inside the transaction.
func (t *Tx) SetPerms(ctx context.Context, path string, perms ...Perm) error {
	return t.c.setPerms(ctx, t.id, path, perms)
}

// Transact runs fn in a transaction and commits it, redoing both while the
// commit fails with ErrRetry (a bounded number of times). If fn fails the
// transaction is aborted and fn's error returned.
func (c *Client) Transact(ctx context.Context, fn func(*Tx) error) error {
	var err error
	for range maxTransactRetries {
		var t *Tx
		if t, err = c.Start(ctx); err != nil {
			return err
		}
		if err = fn(t); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unwatchTimeout)
			aerr := t.Abort(actx)
			cancel()
			if aerr != nil && !errors.Is(aerr, ErrClosed) {
				return errors.Join(err, aerr)
			}
			return err
		}
		if err = t.Commit(ctx); !errors.Is(err, ErrRetry) {
			return err
		}
	}
	return fmt.Errorf("xenstore: transaction conflicted %d times: %w", maxTransactRetries, err)
}
