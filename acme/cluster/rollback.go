package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/edgecert/edgecert/acme"
)

// rollbackMark marks a certificate document as an operator's rollback on
// host By (from serial From).
type rollbackMark struct {
	From string `json:"from"`
}

// PublishRollback makes the certificate an operator rolled back to on this
// host the cluster's: stored (key sealed, signed) with the rollback's mark
// under the certificate's lock, so that every host takes it and holds its
// renewal; the cluster's retry schedule for it is cleared.
func (i *Issuer) PublishRollback(ctx context.Context, r acme.SharedRollback) error {
	c := i.c
	s, err := c.current()
	if err != nil {
		return err
	}
	id := ID(r.Domains, r.KeyType, r.Profile, i.ca.Directory())
	unlock, err := c.localLock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	mu := concurrency.NewMutex(s, c.key("locks", id))
	if err := mu.Lock(ctx); err != nil {
		return fmt.Errorf("cluster: wait for the certificate's lock: %w", i.lost(s, err))
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
		defer cancel()
		_ = mu.Unlock(uctx)
	}()
	leaf, err := leafOf(string(r.Chain))
	if err != nil {
		return err
	}
	k := c.key("certs", id)
	data, err := c.seal.sign(k, certDoc{Domains: r.Domains, KeyType: r.KeyType, Profile: r.Profile, Serial: serialHex(leaf), NotAfter: leaf.NotAfter,
		Chain: string(r.Chain), CA: i.ca.Directory(), Key: c.seal.seal(k, r.Key), By: c.cfg.Node, At: time.Now().UTC(),
		Rollback: &rollbackMark{From: r.From}})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Txn(pctx).If(mu.IsOwner()).Then(clientv3.OpPut(k, data), clientv3.OpDelete(c.key("retry", id))).Commit()
	switch {
	case err != nil:
		return fmt.Errorf("etcd: store the rollback: %w", err)
	case !resp.Succeeded:
		return errors.New("this host lost the certificate's lock")
	}
	return nil
}
