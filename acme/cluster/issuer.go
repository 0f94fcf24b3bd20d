package cluster

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/edgecert/edgecert/acme"
)

// One order per certificate, cluster-wide: a host that needs a certificate
// takes its own lock of it, then the certificate's etcd mutex (held on its
// session's lease), then looks at what the cluster has. A certificate
// another host stored is taken as it is, no order, only by the one rule
// (take.go); a retry schedule another host's failure set is honoured;
// otherwise this host orders, and stores the result (key sealed, signed)
// before it lets go. A host that dies holding the mutex loses it with its
// lease (TTL), and the next host waiting takes over. A certificate issued
// as the lease was lost is kept and stored later (kept.go).

// caIssuer is the issuer that talks to the CA (acme/legoissuer).
type caIssuer interface {
	Obtain(ctx context.Context, o acme.Order) (chain, key []byte, err error)
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*acme.RenewalInfo, error)
	Directory() string // the CA's directory URL
}

// Issuer is acme's issuer for a host of the cluster.
type Issuer struct {
	c  *Cluster
	ca caIssuer
}

// Issuer wraps ca so that the cluster orders each certificate once.
func (c *Cluster) Issuer(ca caIssuer) *Issuer { return &Issuer{c: c, ca: ca} }

// certDoc is a certificate as the cluster stores it.
type certDoc struct {
	Domains  []string  `json:"domains"`
	KeyType  string    `json:"key_type"`
	Profile  string    `json:"profile,omitempty"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	Chain    string    `json:"chain"`
	CA       string    `json:"ca"`  // the directory it came from
	Key      []byte    `json:"key"` // sealed
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	// Rollback: an operator on host By rolled the certificate back to
	// this one (from serial Rollback.From): every host takes it and holds
	// its renewal until one renews it.
	Rollback *rollbackMark `json:"rollback,omitempty"`
}

// retryDoc is the cluster's retry schedule for a certificate.
type retryDoc struct {
	Failures  int       `json:"failures"`
	NotBefore time.Time `json:"not_before"`
	Err       string    `json:"error"`
	By        string    `json:"by"`
	Replaces  string    `json:"replaces,omitempty"` // the serial the failed order would have replaced
}

// backoff is the cluster's retry schedule after failed orders (Let's
// Encrypt's advice, as for one host).
var backoff = []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour}

// retrySlack is how early before the cluster's retry time an order may go.
const retrySlack = 2 * time.Second

// Obtain returns the cluster's certificate for o when it is one this host
// should take (take), and orders one (once, cluster-wide) otherwise. A
// TakeOnly order never orders: without a certificate to take it fails with
// acme.ErrNothingNewer.
func (i *Issuer) Obtain(ctx context.Context, o acme.Order) (chain, key []byte, err error) {
	c := i.c
	s, err := c.current()
	if err != nil {
		return nil, nil, &acme.OrderError{Err: err}
	}
	// Everything below ends when the session does: a host cut from etcd
	// orders nothing more, and its mutex is someone else's by then.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	id := ID(o.Domains, o.KeyType, o.Profile, i.ca.Directory())
	if o.TakeOnly {
		// Another host stored it: read it, no lock (a store is one
		// transaction, never seen half done).
		doc, _, err := i.read(ctx, id)
		if err != nil {
			return nil, nil, &acme.OrderError{Err: i.lost(s, err)}
		}
		return i.take(id, doc, o)
	}
	// etcd's mutex is re-entrant on one session: two names for one
	// certificate on this host would both order. This host's own lock
	// comes first.
	unlock, err := c.localLock(ctx, id)
	if err != nil {
		return nil, nil, &acme.OrderError{Err: fmt.Errorf("cluster: wait for this host's other order of the certificate: %w", err)}
	}
	defer unlock()
	mu := concurrency.NewMutex(s, c.key("locks", id))
	if err := mu.Lock(ctx); err != nil {
		return nil, nil, &acme.OrderError{Err: fmt.Errorf("cluster: wait for the certificate's lock: %w", i.lost(s, err))}
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
		defer cancel()
		_ = mu.Unlock(uctx) // if it fails, the lease lets go
	}()
	doc, retry, err := i.read(ctx, id)
	if err != nil {
		return nil, nil, &acme.OrderError{Err: i.lost(s, err)}
	}
	if chain, key, err := i.take(id, doc, o); !errors.Is(err, acme.ErrNothingNewer) {
		return chain, key, err
	}
	replaces := ""
	if o.Replaces != nil {
		replaces = serialHex(o.Replaces)
	}
	// A host whose own schedule is a moment ahead of the cluster's (both
	// count from the same failure) is let through, not sent away again.
	if retry != nil && !o.Forced && retry.Replaces == replaces && time.Now().Add(retrySlack).Before(retry.NotBefore) {
		return nil, nil, &acme.OrderError{RetryAfter: time.Until(retry.NotBefore),
			Err: fmt.Errorf("an order by %s failed (%s); the cluster retries from %s", retry.By, retry.Err, retry.NotBefore.UTC().Format(time.RFC3339))}
	}
	c.log.Info("ordering for the cluster (this host holds the certificate's lock)", "domains", strings.Join(o.Domains, ","))
	chain, key, err = i.ca.Obtain(ctx, o)
	if err != nil {
		i.failed(ctx, mu, id, retry, replaces, err)
		return nil, nil, err
	}
	if err := i.store(ctx, mu, id, o, chain, key, replaces); err != nil {
		// Issued is never thrown away: this host writes it, and stores it
		// in the cluster at its next session unless a newer one is there.
		c.log.Error("cannot store the issued certificate in the cluster; this host keeps it and stores it when it can", "domains", strings.Join(o.Domains, ","), "err", err)
	}
	return chain, key, nil
}

// lost says "cluster unreachable" when err comes from the session ending.
func (i *Issuer) lost(s *concurrency.Session, err error) error {
	select {
	case <-s.Done():
		return &UnreachableError{Why: "etcd lease lost", Since: time.Now()}
	default:
		return err
	}
}

func (i *Issuer) read(ctx context.Context, id string) (*certDoc, *retryDoc, error) {
	c := i.c
	gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Txn(gctx).Then(clientv3.OpGet(c.key("certs", id)), clientv3.OpGet(c.key("retry", id))).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: read the certificate: %w", err)
	}
	var doc *certDoc
	var retry *retryDoc
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		doc = &certDoc{}
		if !c.verified(c.key("certs", id), kvs[0].Value, doc) {
			doc = nil // unreadable or forged: ordered again, and overwritten
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		retry = &retryDoc{}
		if !c.verified(c.key("retry", id), kvs[0].Value, retry) {
			retry = nil
		}
	}
	return doc, retry, nil
}

func (i *Issuer) store(ctx context.Context, mu *concurrency.Mutex, id string, o acme.Order, chain, key []byte, replaces string) error {
	c := i.c
	leaf, err := leafOf(string(chain))
	if err != nil {
		return err
	}
	k := c.key("certs", id)
	data, err := c.seal.sign(k, certDoc{Domains: o.Domains, KeyType: o.KeyType, Profile: o.Profile, Serial: serialHex(leaf), NotAfter: leaf.NotAfter,
		Chain: string(chain), CA: i.ca.Directory(), Key: c.seal.seal(k, key), By: c.cfg.Node, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	// Stored only while this host still holds the mutex: a host whose
	// lease ended meanwhile must not overwrite its successor's.
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
		ops := []clientv3.Op{clientv3.OpPut(k, data), clientv3.OpDelete(c.key("retry", id))}
		if replaces != "" {
			ops = append(ops, clientv3.OpDelete(c.key("ari", replaces))) // the replaced one's renewal info
		}
		resp, err := c.cli.Txn(pctx).If(mu.IsOwner()).Then(ops...).Commit()
		cancel()
		switch {
		case err == nil && resp.Succeeded:
			return nil
		case err == nil:
			c.keep(id, data, leaf.NotAfter)
			return errors.New("this host lost the certificate's lock while ordering")
		}
		last = err
		if ctx.Err() != nil {
			break // the session is gone: kept for the next one, the volume is not kept waiting
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	c.keep(id, data, leaf.NotAfter)
	return fmt.Errorf("etcd: store the certificate: %w", last)
}

// failed sets the cluster's retry schedule after a failed order.
func (i *Issuer) failed(ctx context.Context, mu *concurrency.Mutex, id string, prev *retryDoc, replaces string, err error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return // cancelled (a stop, a lost lease), not failed; past its deadline it failed
	}
	c := i.c
	n := 1
	if prev != nil && prev.Replaces == replaces {
		n = prev.Failures + 1
	}
	wait := backoff[min(n, len(backoff))-1]
	var oe *acme.OrderError
	if errors.As(err, &oe) && oe.RetryAfter > wait {
		wait = oe.RetryAfter
	}
	why := err.Error()
	if c.cfg.Redact != nil {
		why = c.cfg.Redact(why)
	}
	data, _ := c.seal.sign(c.key("retry", id), retryDoc{Failures: n, NotBefore: time.Now().Add(wait).UTC(), Err: why, By: c.cfg.Node, Replaces: replaces})
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TTL)
	defer cancel()
	if _, perr := c.cli.Txn(pctx).If(mu.IsOwner()).Then(clientv3.OpPut(c.key("retry", id), data)).Commit(); perr != nil {
		c.log.Warn("cannot record the failed order in the cluster", "err", perr)
	}
}

func leafOf(chain string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(chain))
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// serialHex is a serial as status shows it.
func serialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// localLock holds this host's lock of certificate id until unlock, or
// fails when ctx ends first.
func (c *Cluster) localLock(ctx context.Context, id string) (unlock func(), err error) {
	c.mu.Lock()
	if c.locals == nil {
		c.locals = map[string]chan struct{}{}
	}
	ch := c.locals[id]
	if ch == nil {
		ch = make(chan struct{}, 1)
		c.locals[id] = ch
	}
	c.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
