package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Every host proves its own proxies serve a certificate and says so under
// proofs/<cert>/<node>, on its session's lease (a host gone, its proofs go
// with it: they do not pile up under the names of recreated containers),
// published again at each new session; status on any host shows them all.

// Proof is what one host's proxies were proven to serve.
type Proof struct {
	Node   string    `json:"node"`
	Serial string    `json:"serial"`
	At     time.Time `json:"proven_at"`
	Alive  bool      `json:"alive"` // the host is in the cluster now
}

// Proven records that this host's proxies serve serial for its
// certificate name.
func (c *Cluster) Proven(ctx context.Context, name, serial string) error {
	id, ok := c.idOf(name)
	if !ok {
		return nil // not a wish of this host's (any more)
	}
	p := Proof{Node: c.cfg.Node, Serial: serial, At: time.Now().UTC()}
	c.mu.Lock()
	if c.proofs == nil {
		c.proofs = map[string]Proof{}
	}
	c.proofs[id] = p
	c.mu.Unlock()
	s, err := c.current()
	if err != nil {
		return err // published when the session is made
	}
	return c.putProof(ctx, s, id, p)
}

func (c *Cluster) putProof(ctx context.Context, s *concurrency.Session, id string, p Proof) error {
	k := c.key("proofs", id, c.cfg.Node)
	data, _ := c.seal.sign(k, p)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	if _, err := c.cli.Put(ctx, k, data, clientv3.WithLease(s.Lease())); err != nil {
		return fmt.Errorf("etcd: publish the proof: %w", err)
	}
	return nil
}

// publishProofs publishes this host's proofs on a new session.
func (c *Cluster) publishProofs(ctx context.Context, s *concurrency.Session) {
	c.mu.Lock()
	proofs := maps.Clone(c.proofs)
	c.mu.Unlock()
	for id, p := range proofs {
		if err := c.putProof(ctx, s, id, p); err != nil {
			c.log.Warn("cannot publish this host's proof", "err", err)
			return
		}
	}
}

// maxProofs bounds one read of every proof (a cluster far past any sizing
// README gives): status stays an answer, not a scan.
const maxProofs = 100_000

// idOf is the cluster identity of this host's certificate name.
func (c *Cluster) idOf(name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.wants {
		if w.Name == name {
			return c.id(w), true
		}
	}
	return "", false
}

// Proofs returns every host's proof of each of this host's certificates,
// by this host's name for it and then by node, in one etcd request.
func (c *Cluster) Proofs(ctx context.Context) (map[string][]Proof, error) {
	if _, err := c.current(); err != nil {
		return nil, err
	}
	names := map[string][]string{} // cluster identity -> this host's names
	c.mu.Lock()
	for _, w := range c.wants {
		id := c.id(w)
		names[id] = append(names[id], w.Name)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(c.key("proofs")+"/", clientv3.WithPrefix(), clientv3.WithLimit(maxProofs)),
		clientv3.OpGet(c.key("nodes")+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, fmt.Errorf("etcd: read proofs: %w", err)
	}
	alive := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		alive[strings.TrimPrefix(string(kv.Key), c.key("nodes")+"/")] = true
	}
	out := map[string][]Proof{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), c.key("proofs")+"/"), "/")
		var p Proof
		if len(names[id]) == 0 || !c.verified(string(kv.Key), kv.Value, &p) {
			continue
		}
		p.Alive = alive[p.Node]
		for _, n := range names[id] {
			out[n] = append(out[n], p)
		}
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b Proof) int { return strings.Compare(a.Node, b.Node) })
	}
	return out, nil
}

// watchCerts hears of certificates other hosts store: for each this host
// wants, onCert is told the local name, serial and expiry, so that a host
// whose volume holds an older one takes the new one. At every (re)connect
// the whole list is read first: what changed while this host was away
// counts too.
func (c *Cluster) watchCerts(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	resp, err := c.cli.Get(gctx, c.key("certs")+"/", clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("etcd: read certificates: %w", err)
	}
	for _, kv := range resp.Kvs {
		c.certPut(string(kv.Key), kv.Value)
	}
	wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), c.key("certs")+"/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("etcd: watch certificates: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				c.certPut(string(ev.Kv.Key), ev.Kv.Value)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd: the certificate watch ended")
}

// StoredCert is a certificate the cluster holds, as onCert hears of it.
type StoredCert struct {
	Name     string // this host's name for it
	Serial   string
	NotAfter time.Time
	By       string
	At       time.Time // when it was stored
	Rollback bool      // an operator on host By rolled back to it
}

func (c *Cluster) certPut(key string, value []byte) {
	var doc certDoc
	if c.cfg.OnCert == nil || !c.verified(key, value, &doc) || doc.By == c.cfg.Node {
		return
	}
	id := strings.TrimPrefix(key, c.key("certs")+"/")
	c.mu.Lock()
	var names []string
	for _, w := range c.wants {
		if c.id(w) == id {
			names = append(names, w.Name)
		}
	}
	c.mu.Unlock()
	for _, n := range names {
		c.cfg.OnCert(StoredCert{Name: n, Serial: doc.Serial, NotAfter: doc.NotAfter, By: doc.By, At: doc.At, Rollback: doc.Rollback != nil})
	}
}
