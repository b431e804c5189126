package clonesvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketVMs         = []byte("vms")
	bucketTickets     = []byte("tickets")
	bucketCheckpoints = []byte("checkpoints")
	bucketMeta        = []byte("meta")
	keyFormat         = []byte("format")
)

// store is the service's record database.
type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("state database %s is locked: is another sfld running? %w", path, ErrUnavailable)
		}
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVMs, bucketTickets, bucketCheckpoints, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyFormat); v != nil {
			if string(v) != strconv.Itoa(stateFormat) {
				return fmt.Errorf("state format %s, this sfld reads %d", v, stateFormat)
			}
			return nil
		}
		return meta.Put(keyFormat, []byte(strconv.Itoa(stateFormat)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", bucket, id, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(id), data)
	}); err != nil {
		return fmt.Errorf("record %s %s: %w", bucket, id, err)
	}
	return nil
}

func (s *store) delete(bucket []byte, id string) error {
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	}); err != nil {
		return fmt.Errorf("delete %s %s: %w", bucket, id, err)
	}
	return nil
}

// load decodes every record of bucket with fn; a record that does not
// decode is reported and skipped (recovery cleans up what it can).
func load[T any](s *store, bucket []byte, fn func(T)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("record %s %s is corrupt: %w", bucket, k, err)
			}
			fn(rec)
			return nil
		})
	})
}
