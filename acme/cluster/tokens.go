package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// HTTP-01 on every host: the ordering host publishes each token under its
// lease before it tells the CA to validate; every other live host writes it
// into its own webroot (a load balancer may send the CA to any of them) and
// acknowledges it under its own lease, a host that wants the name after
// fetching it through its own proxies. The order goes on when every live
// host has acknowledged it, or after AckWait with a warning naming those
// that did not. Tokens and acknowledgements are deleted after
// the validation (and vanish with the lease of a host that dies).

type tokenDoc struct {
	Domain  string `json:"domain"`
	KeyAuth string `json:"key_auth"`
	By      string `json:"by"`
}

// tokenName is what a CA's token may be (base64url, RFC 8555 8.3).
var tokenName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// ShareToken publishes one HTTP-01 token for domain and waits until the
// other live hosts serve it (at most AckWait). withdraw removes it
// everywhere.
func (c *Cluster) ShareToken(ctx context.Context, domain, token, keyAuth string) (withdraw func(), err error) {
	if !tokenName.MatchString(token) {
		return nil, fmt.Errorf("the CA sent an unusable token %q", token)
	}
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	doc, _ := c.seal.sign(c.key("tokens", token), tokenDoc{Domain: domain, KeyAuth: keyAuth, By: c.cfg.Node})
	pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	_, err = c.cli.Put(pctx, c.key("tokens", token), doc, clientv3.WithLease(s.Lease()))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcd: publish token: %w", err)
	}
	withdraw = func() {
		// Tried three times; a token left behind goes with this host's
		// lease, and other hosts remove its file when they hear of that.
		var err error
		for attempt := range 3 {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
			_, err = c.cli.Txn(wctx).Then(
				clientv3.OpDelete(c.key("tokens", token)),
				clientv3.OpDelete(c.key("acks", token)+"/", clientv3.WithPrefix())).Commit()
			cancel()
			if err == nil {
				return
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		c.log.Warn("cannot withdraw an HTTP-01 token from the cluster (it goes with this host's lease)", "domains", domain, "err", err)
	}
	hosts, err := c.liveHosts(ctx)
	if err != nil {
		withdraw()
		return nil, err
	}
	if len(hosts) == 0 {
		return withdraw, nil
	}
	missing, err := c.awaitAcks(ctx, token, hosts)
	if err != nil {
		withdraw()
		return nil, err
	}
	if len(missing) > 0 {
		c.log.Warn("hosts did not confirm they serve the HTTP-01 token; validating anyway: the CA fails if it asks one of them",
			"domains", domain, "hosts", strings.Join(missing, ","), "waited", c.cfg.AckWait.String())
	}
	return withdraw, nil
}

// awaitAcks waits until each of hosts acknowledged token, ctx ends, or
// AckWait passes; it returns the hosts that did not.
func (c *Cluster) awaitAcks(ctx context.Context, token string, hosts []string) ([]string, error) {
	deadline := time.Now().Add(c.cfg.AckWait)
	wait := 10 * time.Millisecond
	for {
		gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		resp, err := c.cli.Get(gctx, c.key("acks", token)+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			return nil, fmt.Errorf("etcd: read acknowledgements: %w", err)
		}
		have := map[string]bool{}
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = true
		}
		missing := slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return have[c.key("acks", token, h)] })
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// serveTokens writes the tokens already published (by other hosts) and
// returns the revision to watch from.
func (c *Cluster) serveTokens(ctx context.Context, s *concurrency.Session) (int64, error) {
	gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Get(gctx, c.key("tokens")+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: read tokens: %w", err)
	}
	live := map[string]bool{}
	for _, kv := range resp.Kvs {
		live[string(kv.Key)] = true
		c.tokenPut(ctx, s, string(kv.Key), kv.Value)
	}
	// Tokens this host served that were withdrawn while it was away.
	c.mu.Lock()
	var stale []string
	for key := range c.served {
		if !live[key] {
			stale = append(stale, key)
		}
	}
	c.mu.Unlock()
	for _, key := range stale {
		c.tokenGone(key)
	}
	return resp.Header.Revision, nil
}

// watchTokens follows tokens from rev on: a new one is written and
// acknowledged, a deleted one removed from the webroot.
func (c *Cluster) watchTokens(ctx context.Context, s *concurrency.Session, rev int64) error {
	wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), c.key("tokens")+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("etcd: watch tokens: %w", err)
		}
		for _, ev := range wr.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				c.tokenPut(ctx, s, string(ev.Kv.Key), ev.Kv.Value)
			case clientv3.EventTypeDelete:
				c.tokenGone(string(ev.Kv.Key))
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd: the token watch ended")
}

func (c *Cluster) tokenPath(key string) (string, string, bool) {
	token := strings.TrimPrefix(key, c.key("tokens")+"/")
	if !tokenName.MatchString(token) || c.cfg.Webroot == "" {
		return "", "", false
	}
	return token, filepath.Join(c.cfg.Webroot, ".well-known", "acme-challenge", token), true
}

// tokenPut serves another host's token: written into this host's webroot,
// fetched through its proxies, then acknowledged (in the background: the
// watch goes on).
func (c *Cluster) tokenPut(ctx context.Context, s *concurrency.Session, key string, value []byte) {
	token, path, ok := c.tokenPath(key)
	var doc tokenDoc
	if !ok || !c.verified(key, value, &doc) || doc.By == c.cfg.Node {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		c.log.Warn("cannot serve another host's HTTP-01 token", "domains", doc.Domain, "by", doc.By, "err", err)
		return
	}
	if err := os.WriteFile(path, []byte(doc.KeyAuth), 0o644); err != nil {
		c.log.Warn("cannot serve another host's HTTP-01 token", "domains", doc.Domain, "by", doc.By, "err", err)
		return
	}
	c.mu.Lock()
	if c.served == nil {
		c.served = map[string]bool{}
	}
	c.served[key] = true
	c.mu.Unlock()
	go func() {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.AckWait)
		defer cancel()
		if c.cfg.Check != nil && c.wanted(doc.Domain) {
			// A proxy being mended or reloaded may serve it a moment later:
			// checked again every second while the token is published, up
			// to the orderer's wait for acknowledgements.
			for failed := false; ; {
				err := c.cfg.Check.CheckToken(cctx, doc.Domain, token, doc.KeyAuth)
				if err == nil {
					if failed {
						c.log.Info("another host's HTTP-01 token is served now; acknowledged", "domains", doc.Domain, "by", doc.By)
					}
					break
				}
				if !failed {
					c.log.Warn("another host's HTTP-01 token is written but this host's proxies do not serve it; not acknowledged until they do",
						"domains", doc.Domain, "by", doc.By, "err", err)
					failed = true
				}
				t := time.NewTimer(time.Second)
				select {
				case <-cctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				if _, err := os.Stat(path); err != nil {
					return // withdrawn
				}
			}
		}
		if _, err := c.cli.Put(cctx, c.key("acks", token, c.cfg.Node), "", clientv3.WithLease(s.Lease())); err != nil {
			c.log.Warn("cannot acknowledge another host's HTTP-01 token", "domains", doc.Domain, "by", doc.By, "err", err)
		}
	}()
}

func (c *Cluster) tokenGone(key string) {
	c.mu.Lock()
	delete(c.served, key)
	c.mu.Unlock()
	if _, path, ok := c.tokenPath(key); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("cannot remove an HTTP-01 token from the webroot", "err", err)
		}
	}
}
