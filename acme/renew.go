package acme

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Renew requests from the operator (edgecert renew): taken by the loop,
// answered through waiters.go when their work is done. Dry runs bypass the
// loop: they touch no state.

type renewReq struct {
	name   string
	force  bool
	forget bool // Forget, not Renew
	// rollback: Rollback, not Renew; serial picks the version ("": the
	// newest before the current one).
	rollback bool
	serial   string
	reply    chan RenewResult
}

// Renew asks for name to be renewed (force: even if not due, and past any
// retry wait) and waits for the outcome, deployment included.
func (m *Manager) Renew(ctx context.Context, name string, force bool) RenewResult {
	return m.ask(ctx, renewReq{name: name, force: force, reply: make(chan RenewResult, 1)}, " (the renewal goes on; see status)")
}

// ask hands req to the loop and waits for its answer; after a timeout, the
// answer says so, followed by afterTimeout.
func (m *Manager) ask(ctx context.Context, req renewReq, afterTimeout string) RenewResult {
	select {
	case m.renews <- req:
	case <-ctx.Done():
		return RenewResult{Name: req.name, Err: ctx.Err().Error()}
	}
	select {
	case r := <-req.reply:
		return r
	case <-ctx.Done():
		return RenewResult{Name: req.name, Err: "gave up waiting: " + ctx.Err().Error() + afterTimeout}
	}
}

// renew takes a renew request: an order, a retried reload, or "not due".
func (m *Manager) renew(ctx context.Context, wg *sync.WaitGroup, r renewReq) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.forget {
		m.forget(r)
		return
	}
	if r.rollback {
		m.rollback(ctx, wg, r)
		return
	}
	now := m.now()
	e, ok := m.certs[r.name]
	var o Order
	if ok {
		o, ok = wish(e, m.def, now)
	}
	if !ok {
		r.reply <- RenewResult{Name: r.name, Err: fmt.Sprintf("no certificate named %q is wanted or renewed (see edgecert status)", r.name)}
		return
	}
	if e.ordering {
		// One order per certificate at a time: a renewal asked for while one
		// runs (forced or not) gets that order's outcome, not a second order.
		e.wait.joinOrder(r.reply)
		return
	}
	if e.st.Hold != nil {
		m.log.Info("rollback hold released by the operator; automatic renewal resumes", "cert", e.name, "serial", e.st.Hold.Serial)
		e.st.Hold = nil
		m.record(e, Event{Kind: EventHoldReleased, Serial: e.disk.Serial, Detail: "edgecert renew"})
		m.save(e)
	}
	if now.Before(e.st.LimitedUntil) {
		r.reply <- RenewResult{Name: e.name,
			Err: fmt.Sprintf("the CA asked for no new order before %s (rate limited; an order before then is refused and counts against the limit)",
				e.st.LimitedUntil.Format(time.RFC3339))}
		return
	}
	if !r.force {
		need, _ := needsOrder(e, o, m.cfg.Directory, now)
		if !need && e.want != nil && e.deployedFP != e.disk.Fingerprint {
			// Current on the volume but not proven served (say, the proxy's
			// config was broken and has been fixed): retry the reload now
			// instead of at the end of its backoff. No order.
			e.deployRetryAt = time.Time{}
			e.wait.awaitReload(r.reply, e.disk.Fingerprint)
			return
		}
		if !need {
			at, src := e.renewal()
			r.reply <- RenewResult{Name: e.name, Serial: e.disk.Serial, NotAfter: e.disk.NotAfter,
				Message: fmt.Sprintf("not due; renews at %s (%s); use --force to renew now", at.Format(time.RFC3339), src)}
			return
		}
	}
	if r.force && m.cfg.ForcedLimit > 0 {
		if recent := within(e.st.ForcedOrders, now, forcedWindow); len(recent) >= m.cfg.ForcedLimit {
			r.reply <- RenewResult{Name: e.name, Err: fmt.Sprintf(
				"%d forced renewals of %s in the last 7 days, the most allowed (EDGECERT_FORCED_RENEWALS): the next is possible from %s (Let's Encrypt issues at most 5 certificates for the same names a week)",
				len(recent), e.name, recent[0].Add(forcedWindow).Format(time.RFC3339))}
			return
		}
	}
	e.force, e.forced = true, e.forced || r.force
	if m.hold != "" {
		// Orders wait (the cluster unreachable, no proxy running): the
		// operator is told at once, not when the caller gives up; the
		// renewal is kept and placed once, when the hold clears.
		r.reply <- heldResult(e.name, m.hold)
		return
	}
	e.wait.awaitOrder(r.reply)
}

// Forget releases name: the next wish under it may ask for other names
// (its certificate is then ordered); the files stay until that one is
// written.
func (m *Manager) Forget(ctx context.Context, name string) RenewResult {
	return m.ask(ctx, renewReq{name: name, forget: true, reply: make(chan RenewResult, 1)}, "")
}

// forget takes a Forget request. m.mu is held.
func (m *Manager) forget(r renewReq) {
	e, ok := m.certs[r.name]
	if !ok {
		r.reply <- RenewResult{Name: r.name, Err: fmt.Sprintf("no certificate named %q (see edgecert status)", r.name)}
		return
	}
	e.st.Released = true
	m.save(e)
	m.log.Info("certificate name released by the operator", "cert", r.name)
	m.reconcile(m.lastWants) // a wish refused for it is taken now
	r.reply <- RenewResult{Name: r.name, Message: "released: the next container that asks for this name gets it, with its own names (ordered then); the files stay until that certificate is written"}
}

// DryRun performs a whole order for name against the dry-run CA and throws
// the certificate away: the volume, the state and the proxies are not touched.
func (m *Manager) DryRun(ctx context.Context, name string) RenewResult {
	if m.cfg.DryRun == nil {
		return RenewResult{Name: name, DryRun: true, Err: "no dry-run CA is configured"}
	}
	m.mu.Lock()
	e, ok := m.certs[name]
	var o Order
	if ok {
		o, ok = wish(e, m.def, m.now())
	}
	m.mu.Unlock()
	if !ok {
		return RenewResult{Name: name, DryRun: true, Err: fmt.Sprintf("no certificate named %q is wanted or renewed (see edgecert status)", name)}
	}
	res := RenewResult{Name: name, DryRun: true, Ordered: true}
	// A dry run is an order too: it takes one of the EDGECERT_MAX_ORDERS slots.
	select {
	case m.slots <- struct{}{}:
		defer func() { <-m.slots; m.poke() }()
	case <-ctx.Done():
		res.Message, res.Err = "dry run not started: every order slot stayed taken", ctx.Err().Error()
		return res
	}
	if err := m.preflight(ctx, o.Domains); err != nil {
		res.Message, res.Err = "dry run failed", err.Error()
		return res
	}
	chain, _, err := m.cfg.DryRun.Obtain(ctx, o)
	if err != nil {
		res.Message, res.Err = "dry run failed", err.Error()
		return res
	}
	leaf, _, err := parseChain(chain)
	if err != nil {
		res.Message, res.Err = "dry run: the CA's answer is unreadable", err.Error()
		return res
	}
	res.Serial, res.NotAfter = infoOf(leaf).Serial, leaf.NotAfter
	res.Message = "dry run succeeded: the CA issued a certificate, which was discarded (nothing written, nothing reloaded)"
	return res
}

// heldResult answers a renewal that orders cannot place now, for why.
func heldResult(name, why string) RenewResult {
	return RenewResult{Name: name, Message: "held, nothing ordered now",
		Err: fmt.Sprintf("orders wait (%s); this renewal is kept and placed once, as soon as that clears (see edgecert status)", why)}
}
