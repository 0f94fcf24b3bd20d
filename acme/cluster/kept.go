package cluster

import (
	"context"
	"errors"
	"maps"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keptCert is an issued certificate waiting to be stored in the cluster.
type keptCert struct {
	doc      string // the certDoc, key sealed, signed
	notAfter time.Time
}

// keep holds a certificate this host could not store, for publishKept.
func (c *Cluster) keep(id string, doc string, notAfter time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kept == nil {
		c.kept = map[string]keptCert{}
	}
	if k, ok := c.kept[id]; !ok || notAfter.After(k.notAfter) {
		c.kept[id] = keptCert{doc: doc, notAfter: notAfter}
	}
}

// publishKept stores each kept certificate, at a new session, where the
// cluster has none or an older one (compared and put in one transaction).
func (c *Cluster) publishKept(ctx context.Context) {
	c.mu.Lock()
	kept := maps.Clone(c.kept)
	c.mu.Unlock()
	for id, k := range kept {
		err := c.publishOne(ctx, id, k)
		if err != nil {
			c.log.Warn("cannot store a kept certificate in the cluster yet", "id", id, "err", err)
			continue
		}
		c.mu.Lock()
		if c.kept[id].notAfter.Equal(k.notAfter) {
			delete(c.kept, id)
		}
		c.mu.Unlock()
	}
}

func (c *Cluster) publishOne(ctx context.Context, id string, k keptCert) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	key := c.key("certs", id)
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return err
	}
	cmpRev := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(resp.Kvs) > 0 {
		var doc certDoc
		if c.verified(key, resp.Kvs[0].Value, &doc) && !doc.NotAfter.Before(k.notAfter) {
			c.log.Info("a kept certificate is not stored: the cluster has one as new", "id", id, "serial", doc.Serial, "by", doc.By)
			return nil
		}
		cmpRev = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
	}
	put, err := c.cli.Txn(ctx).If(cmpRev).Then(clientv3.OpPut(key, k.doc)).Commit()
	switch {
	case err != nil:
		return err
	case !put.Succeeded:
		return errors.New("the certificate changed meanwhile; compared again at the next session")
	}
	c.log.Info("a kept certificate is stored in the cluster", "id", id)
	return nil
}
