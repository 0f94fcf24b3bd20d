package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SetWishes records the certificates this host's containers ask for, and
// publishes them under this host's lease (again at every new session). A
// host that dies stops wanting when its lease ends.
func (c *Cluster) SetWishes(ctx context.Context, ws []Wish) error {
	ws = slices.Clone(ws)
	slices.SortFunc(ws, func(a, b Wish) int { return strings.Compare(a.Name, b.Name) })
	c.mu.Lock()
	same := slices.EqualFunc(c.wants, ws, func(a, b Wish) bool {
		return a.Name == b.Name && a.KeyType == b.KeyType && a.Profile == b.Profile && slices.Equal(a.Domains, b.Domains)
	})
	had := map[string]bool{}
	for _, w := range c.wants {
		had[c.id(w)] = true
	}
	c.wants = ws
	c.mu.Unlock()
	if same {
		return nil
	}
	if _, err := c.current(); err != nil {
		return nil // published, and stored certificates offered, when the session is made
	}
	if err := c.publishWants(ctx); err != nil {
		return err
	}
	// A wish new to this host (its containers seen after the session began,
	// a restart among them) hears of the certificate the cluster already
	// has: the watch only tells of stores from now on.
	for _, w := range ws {
		if id := c.id(w); !had[id] {
			had[id] = true
			if err := c.offerStored(ctx, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// offerStored tells onCert of the certificate stored for id, if any.
func (c *Cluster) offerStored(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	k := c.key("certs", id)
	resp, err := c.cli.Get(ctx, k)
	if err != nil {
		return fmt.Errorf("etcd: read the certificate: %w", err)
	}
	for _, kv := range resp.Kvs {
		c.certPut(k, kv.Value)
	}
	return nil
}

func (c *Cluster) publishWants(ctx context.Context) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	c.mu.Lock()
	data, err := c.seal.sign(c.key("wants", c.cfg.Node), c.wants)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	if _, err := c.cli.Put(ctx, c.key("wants", c.cfg.Node), data, clientv3.WithLease(s.Lease())); err != nil {
		return fmt.Errorf("etcd: publish wishes: %w", err)
	}
	return nil
}

// liveHosts lists the hosts in the cluster now, this one left out.
func (c *Cluster) liveHosts(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.key("nodes")+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("etcd: read the hosts: %w", err)
	}
	var hosts []string
	for _, kv := range resp.Kvs {
		if node := strings.TrimPrefix(string(kv.Key), c.key("nodes")+"/"); node != c.cfg.Node {
			hosts = append(hosts, node)
		}
	}
	return hosts, nil
}

// wanted says whether one of this host's certificates has domain.
func (c *Cluster) wanted(domain string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.wants, func(w Wish) bool { return slices.Contains(w.Domains, domain) })
}
