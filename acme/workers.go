package acme

import (
	"cmp"
	"context"
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
	deployDone             // a deployment was proven, or failed
	ariDone                // the CA answered (or not) about the renewal window
	phaseChange            // an order in flight moved to another phase
)

type result struct {
	kind  resultKind
	name  string
	fp    string // order: the wish ordered (specKey); deploy, ari: the fingerprint concerned
	grp   string // deploy: the group it was proven for
	seq   int    // deploy: which deployment of the certificate
	info  *Info  // order: what was written
	ari   *RenewalInfo
	phase Phase
	err   error
	took  time.Duration // order: inside the issuer; deploy: the whole deployment
	pre   time.Duration // order: in the preflight check
}

// startOrder orders o for e. m.mu is held.
func (m *Manager) startOrder(ctx context.Context, wg *sync.WaitGroup, e *entry, o Order, reason string) {
	e.ordering, e.force = true, false
	e.orderReason = reason
	e.wait.orderStarted()
	m.ordering++
	if old := replaces(e, o, m.cfg.Directory); old != nil {
		o.Replaces = old.Leaf
	}
	name := e.name
	m.log.Info("ordering certificate", "cert", name, "domains", strings.Join(o.Domains, ","), "reason", reason,
		"key_type", o.KeyType, "profile", o.Profile, "replaces", o.Replaces != nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chain, key []byte
		var took time.Duration
		m.send(ctx, result{kind: phaseChange, name: name, phase: PhasePreflight})
		pstart := time.Now()
		err := m.preflight(ctx, o.Domains)
		pre := time.Since(pstart)
		if err == nil {
			m.send(ctx, result{kind: phaseChange, name: name, phase: PhaseOrdering})
			start := time.Now()
			chain, key, err = m.cfg.Issuer.Obtain(ctx, o)
			took = time.Since(start)
		}
		var info *Info
		if err == nil {
			m.send(ctx, result{kind: phaseChange, name: name, phase: PhaseWriting})
			info, err = m.cfg.Store.Write(name, chain, key)
		}
		if info != nil {
			info.KeyType = cmp.Or(info.KeyType, o.KeyType)
		}
		m.send(ctx, result{kind: orderDone, name: name, info: info, err: err, took: took, pre: pre, fp: specKey(o)})
	}()
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

// startDeploy hands e's current certificate to the Deployer. m.mu is held.
func (m *Manager) startDeploy(ctx context.Context, wg *sync.WaitGroup, e *entry) {
	e.deploying, e.deployStarted = true, m.now()
	e.deploySeq++
	seq := e.deploySeq
	d := Deployment{Name: e.name, Group: e.want.Group, Domains: slices.Clone(e.disk.Domains), Serial: e.disk.Serial, Fingerprint: e.disk.Fingerprint}
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

// send hands a worker's result to the loop, or drops it at shutdown: what the
// worker wrote is on the volume and is read back at the next start.
func (m *Manager) send(ctx context.Context, r result) {
	select {
	case m.results <- r:
	case <-ctx.Done():
	}
}
