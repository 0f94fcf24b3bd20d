package acme

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The work the loop starts: each runs in a goroutine owned by Run's
// WaitGroup, touches no entry, and hands its outcome back as a result.

type resultKind int

const (
	orderDone   resultKind = iota
	writeDone              // a pending pair was written to the volume, or not
	deployDone             // a deployment was proven, or failed
	ariDone                // the CA answered (or not) about the renewal window
	phaseChange            // an order in flight moved to another phase
)

type result struct {
	kind  resultKind
	name  string
	fp    string       // order: the wish ordered (specKey); deploy, ari: the fingerprint concerned
	grp   string       // deploy: the group it was proven for
	seq   int          // deploy: which deployment of the certificate
	info  *Info        // order, write: what was written
	pair  *pendingPair // order: what the CA issued; nil if it issued nothing
	werr  error        // order, write: writing the issued pair to the volume failed
	ari   *RenewalInfo
	phase Phase
	err   error
	took  time.Duration // order: inside the issuer; deploy: the whole deployment
	force bool          // order: it was forced by the operator
	pre   time.Duration // order: in the preflight check
	// order: a take-only order (an offer, a rollback on another host),
	// taken again after a failure: its offer comes only once.
	take, rollback bool
}

// startOrder orders o for e. m.mu is held.
func (m *Manager) startOrder(ctx context.Context, wg *sync.WaitGroup, e *entry, o Order, reason string) {
	now := m.now()
	switch {
	case e.forced:
		e.st.ForcedOrders = append(within(e.st.ForcedOrders, now, forcedWindow), now)
		m.save(e)
	case wishChanged(e, o, reason):
		e.st.WishOrders = append(within(e.st.WishOrders, now, flapWindow), now)
		m.save(e)
	}
	o.Forced, o.Asked, o.Rollback = e.forced, now, e.refreshRollback
	o.TakeOnly = reason == string(SourceCluster) || o.Rollback
	e.ordering, e.force, e.forced, e.refresh, e.refreshRollback = true, false, false, false, false
	e.orderReason, e.orderStarted = reason, now
	e.wait.orderStarted()
	if old := replaces(e, o, m.cfg.Directory); old != nil {
		o.Replaces = old.Leaf
	}
	if e.disk != nil && !e.disk.Placeholder {
		o.Current = e.disk.Leaf
	}
	name, combined := e.name, e.want != nil && e.want.CombinedPEM
	from := ""
	if e.disk != nil && !e.disk.Placeholder {
		from = e.disk.Serial
	}
	m.log.Info("ordering certificate", "cert", name, "domains", strings.Join(o.Domains, ","), "reason", reason,
		"key_type", o.KeyType, "profile", o.Profile, "replaces", o.Replaces != nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chain, key []byte
		var took time.Duration
		m.send(ctx, result{kind: phaseChange, name: name, phase: PhasePreflight})
		pstart := time.Now()
		err := m.cfg.Store.CheckWritable(name)
		if err != nil {
			err = fmt.Errorf("the certificate volume cannot take it (no order placed): %w", err)
		} else if o.Challenge == "" && !o.TakeOnly {
			err = m.preflight(ctx, o.Domains) // HTTP-01 only: a DNS-01 name need not be on a proxy's port 80
		}
		pre := time.Since(pstart)
		if err == nil {
			m.send(ctx, result{kind: phaseChange, name: name, phase: PhaseOrdering})
			if m.cfg.ReuseKey {
				o.Key, _ = m.cfg.Store.Key(name) // none or unreadable: a new key
			}
			start := time.Now()
			chain, key, err = m.obtain(ctx, o)
			took = time.Since(start)
		}
		r := result{kind: orderDone, name: name, err: err, took: took, pre: pre, fp: specKey(o), force: o.Forced, take: o.TakeOnly, rollback: o.Rollback}
		if err == nil {
			// Kept before it is written: from here on, this certificate is
			// never ordered again, whatever happens to the write or to us.
			r.pair = &pendingPair{Chain: string(chain), Key: string(key), Directory: m.cfg.Directory, KeyType: o.KeyType,
				Profile: o.Profile, Challenge: o.Challenge, DNS: o.DNS, Reason: reason, TookMS: took.Milliseconds(), IssuedAt: time.Now().UTC(), From: from}
			if err := savePending(m.cfg.StateDir, name, r.pair); err != nil {
				m.log.Error("cannot keep the issued certificate in the state volume; writing it to the volume", "cert", name, "err", err)
			}
			m.send(ctx, result{kind: phaseChange, name: name, phase: PhaseWriting})
			r.info, r.werr = m.write(name, r.pair, combined)
		}
		m.send(ctx, r)
	}()
}

// obtain runs one order under the order's whole deadline.
func (m *Manager) obtain(ctx context.Context, o Order) (chain, key []byte, err error) {
	octx, cancel := context.WithTimeout(ctx, m.cfg.OrderTimeout)
	defer cancel()
	chain, key, err = m.cfg.Issuer.Obtain(octx, o)
	if err != nil && ctx.Err() == nil && errors.Is(octx.Err(), context.DeadlineExceeded) {
		err = &OrderError{Err: fmt.Errorf("the order did not finish within EDGECERT_ORDER_TIMEOUT (%s): %w", m.cfg.OrderTimeout, err)}
	}
	return chain, key, err
}

// startWrite writes e's pending pair to the volume again. m.mu is held.
func (m *Manager) startWrite(ctx context.Context, wg *sync.WaitGroup, e *entry) {
	e.writing = true
	name, p, combined := e.name, e.pending, e.want != nil && e.want.CombinedPEM
	wg.Add(1)
	go func() {
		defer wg.Done()
		info, err := m.write(name, p, combined)
		m.send(ctx, result{kind: writeDone, name: name, info: info, werr: err})
	}()
}

// write makes p current on the volume, between the proxies' reads.
func (m *Manager) write(name string, p *pendingPair, combined bool) (*Info, error) {
	if l := m.cfg.Swaps; l != nil {
		deadline := time.Now().Add(swapWait)
		for !l.TryLock() {
			if time.Now().After(deadline) {
				m.log.Warn("a proxy's reload is still reading the certificate files; swapping anyway", "cert", name)
				l = nil
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if l != nil {
			defer l.Unlock()
		}
	}
	info, err := m.cfg.Store.Write(name, []byte(p.Chain), []byte(p.Key), combined)
	if info != nil {
		info.KeyType = cmp.Or(info.KeyType, p.KeyType)
	}
	return info, err
}

// preflight polls the check until it passes or PreflightWait is over. It
// reports the most telling failure: a check cut short by the deadline only
// says "context deadline exceeded", so the one before it (nginx's 404, say)
// is kept when there was one.
func (m *Manager) preflight(ctx context.Context, domains []string) error {
	if m.cfg.Preflight == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PreflightWait)
	defer cancel()
	var reason error
	for {
		err := m.cfg.Preflight.Preflight(ctx, domains)
		if err == nil {
			return nil
		}
		if reason == nil || ctx.Err() == nil {
			reason = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("preflight (no order placed): %w", reason)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startDeploys hands each entry's current certificate to the Deployer,
// saying whether more are about to follow: the others started here, the
// orders in flight, and queued, the orders due that wait for a slot. m.mu
// is held.
func (m *Manager) startDeploys(ctx context.Context, wg *sync.WaitGroup, es []*entry, queued int) {
	coming := queued
	for _, e := range m.certs {
		if e.ordering {
			coming++
		}
	}
	for i, e := range es {
		m.startDeploy(ctx, wg, e, coming > 0 || i < len(es)-1)
	}
}

// startDeploy hands e's current certificate to the Deployer. m.mu is held.
func (m *Manager) startDeploy(ctx context.Context, wg *sync.WaitGroup, e *entry, more bool) {
	e.deploying, e.deployStarted = true, m.now()
	e.deploySeq++
	seq := e.deploySeq
	d := Deployment{Name: e.name, Group: e.want.Group, Domains: slices.Clone(e.disk.Domains), Serial: e.disk.Serial,
		Fingerprint: e.disk.Fingerprint, Written: e.disk.Written, More: more}
	if e.disk.Leaf != nil {
		d.KeyAlg = e.disk.Leaf.PublicKeyAlgorithm
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		err := m.cfg.Deployer.Deploy(ctx, d)
		m.send(ctx, result{kind: deployDone, name: d.Name, fp: d.Fingerprint, grp: d.Group, seq: seq, err: err, took: time.Since(start)})
	}()
}

// startARI asks the CA when to renew e's current certificate. m.mu is held.
func (m *Manager) startARI(ctx context.Context, wg *sync.WaitGroup, e *entry) {
	e.polling = true
	name, leaf, fp := e.name, e.disk.Leaf, e.disk.Fingerprint
	wg.Add(1)
	go func() {
		defer wg.Done()
		ri, err := m.cfg.Issuer.RenewalInfo(ctx, leaf)
		m.send(ctx, result{kind: ariDone, name: name, fp: fp, ari: ri, err: err})
	}()
}

// send hands a worker's result to the loop, which takes results until its
// last worker has ended, at shutdown too.
func (m *Manager) send(_ context.Context, r result) {
	m.results <- r
}
