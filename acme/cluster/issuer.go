package cluster

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/edgecert/edgecert/acme"
)

// One order per certificate, cluster-wide: a host that needs a certificate
// takes the certificate's etcd mutex (held on its session's lease), then
// looks at what the cluster has. A certificate another host stored that is
// newer than what this host would replace is taken as it is, no order; a
// retry schedule another host's failure set is honoured; otherwise this
// host orders, and stores the result (key sealed) before it lets go. A
// host that dies holding the mutex loses it with its lease (TTL), and the
// next host waiting takes over.

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

type rollbackMark struct {
	From string `json:"from"`
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

// ariDoc is the CA's last ARI answer for a certificate, shared so that the
// hosts ask the CA once per Retry-After between them, not once each.
type ariDoc struct {
	Start       time.Time     `json:"start"`
	End         time.Time     `json:"end"`
	RetryAfter  time.Duration `json:"retry_after"`
	Explanation string        `json:"explanation,omitempty"`
	None        bool          `json:"none,omitempty"` // the CA offers no ARI
	Fetched     time.Time     `json:"fetched"`
	By          string        `json:"by"`
}

// ariFresh is how long an answer without a Retry-After is used (the
// Manager's own default poll).
const ariFresh = 12 * time.Hour

// RenewalInfo returns the cluster's fresh ARI answer for leaf, and asks
// the CA (and shares its answer) when there is none.
func (i *Issuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*acme.RenewalInfo, error) {
	c := i.c
	k := c.key("ari", serialHex(leaf))
	if _, err := c.current(); err == nil {
		gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		resp, err := c.cli.Get(gctx, k)
		cancel()
		var doc ariDoc
		if err == nil && len(resp.Kvs) > 0 && c.verified(k, resp.Kvs[0].Value, &doc) {
			fresh := cmp.Or(doc.RetryAfter, ariFresh)
			if age := time.Since(doc.Fetched); age >= 0 && age < fresh {
				if doc.None {
					return nil, acme.ErrNoARI
				}
				return &acme.RenewalInfo{Start: doc.Start, End: doc.End, RetryAfter: fresh - age, Explanation: doc.Explanation}, nil
			}
		}
	}
	ri, err := i.ca.RenewalInfo(ctx, leaf)
	doc := ariDoc{None: errors.Is(err, acme.ErrNoARI), Fetched: time.Now().UTC(), By: c.cfg.Node}
	switch {
	case err == nil:
		doc.Start, doc.End, doc.RetryAfter, doc.Explanation = ri.Start, ri.End, ri.RetryAfter, ri.Explanation
	case !doc.None:
		return nil, err
	}
	if _, cerr := c.current(); cerr == nil {
		data, _ := c.seal.sign(k, doc)
		pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		_, _ = c.cli.Put(pctx, k, data) // best effort: the next host asks the CA itself
		cancel()
	}
	return ri, err
}

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

// take hands over the cluster's certificate doc for o when taking applies
// (takes), and fails with acme.ErrNothingNewer when it does not.
func (i *Issuer) take(id string, doc *certDoc, o acme.Order) (chain, key []byte, err error) {
	if doc == nil {
		return nil, nil, acme.ErrNothingNewer
	}
	if why := takes(doc, o, i.ca.Directory(), time.Now()); why != "" {
		return nil, nil, fmt.Errorf("serial %s by %s: %s: %w", doc.Serial, doc.By, why, acme.ErrNothingNewer)
	}
	key, err = i.c.seal.open(i.c.key("certs", id), doc.Key)
	if err != nil {
		return nil, nil, &acme.OrderError{Err: err, Config: true}
	}
	i.c.log.Info("certificate taken from the cluster, no order", "domains", strings.Join(o.Domains, ","), "serial", doc.Serial, "by", doc.By)
	return []byte(doc.Chain), key, nil
}

// takes is the one rule for taking a certificate from the cluster instead
// of ordering: it must match the wish (names, key type, profile, CA
// directory), be valid now, and be newer than the one this host serves (a
// due or forced renewal never gets its own certificate back); a forced
// order takes only one stored after it was asked for. It says why not, or
// "" when the certificate is to be taken.
func takes(doc *certDoc, o acme.Order, directory string, now time.Time) string {
	switch {
	case !acme.SameNames(doc.Domains, o.Domains) || doc.KeyType != o.KeyType || doc.Profile != o.Profile:
		return "stored for another wish"
	case doc.CA != directory:
		return "from another CA directory"
	}
	leaf, err := leafOf(doc.Chain)
	current := cmp.Or(o.Current, o.Replaces)
	switch {
	case err != nil:
		return "unreadable"
	case now.After(leaf.NotAfter):
		return "expired"
	case o.Rollback && doc.Rollback == nil:
		return "renewed since the rollback"
	case o.Rollback && current != nil && serialHex(leaf) == serialHex(current):
		return "the rolled-back certificate is served here already"
	case o.Rollback:
		return "" // older, as a rollback is
	case current != nil && (serialHex(leaf) == serialHex(current) || !leaf.NotAfter.After(current.NotAfter)):
		return "not newer than the one this host serves"
	case o.Forced && !doc.At.After(o.Asked):
		return "stored before the forced renewal was asked for"
	}
	return ""
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
