package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// The ACME accounts are shared, so that every host orders and replaces
// certificates as the same account: accounts/<id> holds the key (sealed)
// and the registration, written by the host that registered it under the
// account's lock.

type accountDoc struct {
	Key          []byte          `json:"key"` // sealed
	Registration json.RawMessage `json:"registration"`
}

// LoadAccount returns the cluster's account id, fs.ErrNotExist if none.
func (c *Cluster) LoadAccount(ctx context.Context, id string) (key, registration []byte, err error) {
	if _, err := c.current(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	k := c.key("accounts", id)
	resp, err := c.cli.Get(ctx, k)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: read the account: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, fs.ErrNotExist
	}
	var doc accountDoc
	if _, err := c.seal.verify(k, resp.Kvs[0].Value, &doc); err != nil {
		// Written before documents were signed: its key, sealed with
		// authentication, opens only with the secret; it is signed at the
		// next save. Anything else that does not verify is not used.
		if json.Unmarshal(resp.Kvs[0].Value, &doc) != nil || len(doc.Key) == 0 || doc.Key[0] != sealV1 {
			c.rejected(k, err)
			return nil, nil, fs.ErrNotExist
		}
	}
	key, err = c.seal.open(k, doc.Key)
	if err != nil {
		return nil, nil, err
	}
	return key, doc.Registration, nil
}

// SaveAccount stores account id for every host.
func (c *Cluster) SaveAccount(ctx context.Context, id string, key, registration []byte) error {
	if _, err := c.current(); err != nil {
		return err
	}
	k := c.key("accounts", id)
	data, err := c.seal.sign(k, accountDoc{Key: c.seal.seal(k, key), Registration: registration})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	if _, err := c.cli.Put(ctx, k, string(data)); err != nil {
		return fmt.Errorf("etcd: store the account: %w", err)
	}
	return nil
}

// LockAccount holds account id's lock (on this host's lease) until unlock.
func (c *Cluster) LockAccount(ctx context.Context, id string) (unlock func(), err error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	mu := concurrency.NewMutex(s, c.key("locks", "account-"+id))
	if err := mu.Lock(ctx); err != nil {
		return nil, fmt.Errorf("etcd: lock the account: %w", err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
		defer cancel()
		_ = mu.Unlock(uctx)
	}, nil
}
