package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The key check: keycheck under the prefix is a document signed with the
// cluster's key, written once (a transaction: only when there is none) by
// the first host. A host checks it before it joins: one whose secret
// cannot verify it writes nothing and orders nothing, and says why (its
// key id and the cluster's, never a secret). A host given the new secret
// and the old one (EDGECERT_CLUSTER_SECRET_PREVIOUS) that finds the check
// signed with the old one rotates the cluster: it re-seals and re-signs
// every document, then moves the check to the new key.

type keyCheckDoc struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// SecretError means this host's secret is not the cluster's.
type SecretError struct {
	Mine, Cluster string // key ids
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("EDGECERT_CLUSTER_SECRET does not match the cluster's (this host's key id %s, the cluster's %s): this host writes nothing to etcd and orders nothing; "+
		"give it the cluster's secret, or to rotate the secret give every host the new one with the old one as EDGECERT_CLUSTER_SECRET_PREVIOUS", e.Mine, e.Cluster)
}

// checkKey makes sure this host's secret is the cluster's (creating the
// check when there is none), and rotates the cluster to it from the
// previous secret when asked to.
func (c *Cluster) checkKey(ctx context.Context) error {
	k := c.key("keycheck")
	mine, err := c.seal.sign(k, keyCheckDoc{By: c.cfg.Node, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	resp, err := c.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, mine)).Else(clientv3.OpGet(k)).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("etcd: the key check: %w", err)
	}
	if resp.Succeeded {
		c.log.Info("cluster key check created (the first host with this secret)", "key_id", c.seal.cur.kid)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return fmt.Errorf("etcd: the key check vanished while read; checked again")
	}
	var doc keyCheckDoc
	kid, err := c.seal.verify(k, kvs[0].Value, &doc)
	switch {
	case err != nil:
		var env envelope
		_ = json.Unmarshal(kvs[0].Value, &env)
		return &SecretError{Mine: c.seal.cur.kid, Cluster: cmp.Or(env.Kid, "unknown")}
	case kid == c.seal.cur.kid:
		return nil
	}
	return c.rotate(ctx, kvs[0].ModRevision, mine)
}

// rotate re-seals and re-signs every document the previous key signed
// (leased ones, which their hosts write again, are left), then moves the
// key check to the current key if it is still at rev.
func (c *Cluster) rotate(ctx context.Context, rev int64, check string) error {
	c.log.Warn("rotating the cluster secret: re-sealing and re-signing every document", "from_key_id", c.seal.prev.kid, "to_key_id", c.seal.cur.kid)
	gctx, cancel := context.WithTimeout(ctx, 4*c.cfg.TTL)
	resp, err := c.cli.Get(gctx, c.cfg.Prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("etcd: read the documents to rotate: %w", err)
	}
	moved := 0
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		var env envelope
		if kv.Lease != 0 || key == c.key("keycheck") || json.Unmarshal(kv.Value, &env) != nil || env.Kid != c.seal.prev.kid {
			continue
		}
		value, err := c.resign(key, kv.Value)
		if err != nil {
			c.rejected(key, err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		_, err = c.cli.Txn(pctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpPut(key, value)).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("etcd: rotate %s: %w", key, err)
		}
		moved++
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	k := c.key("keycheck")
	done, err := c.cli.Txn(pctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(clientv3.OpPut(k, check)).Commit()
	if err != nil {
		return fmt.Errorf("etcd: move the key check: %w", err)
	}
	if done.Succeeded {
		c.log.Warn("cluster secret rotated; EDGECERT_CLUSTER_SECRET_PREVIOUS can go once every host has the new secret", "documents", moved, "key_id", c.seal.cur.kid)
	}
	return nil
}

// resign returns the document value stored under key, made by the previous
// key, sealed (the private key of a certificate or account document) and
// signed with the current one.
func (c *Cluster) resign(key string, value []byte) (string, error) {
	var doc map[string]json.RawMessage
	if _, err := c.seal.verify(key, value, &doc); err != nil {
		return "", err
	}
	if sealed, ok := doc["key"]; ok && (strings.HasPrefix(key, c.key("certs")+"/") || strings.HasPrefix(key, c.key("accounts")+"/")) {
		var b []byte
		if err := json.Unmarshal(sealed, &b); err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		plain, err := c.seal.open(key, b)
		if err != nil {
			return "", err
		}
		if doc["key"], err = json.Marshal(c.seal.seal(key, plain)); err != nil {
			return "", err
		}
	}
	return c.seal.sign(key, doc)
}
