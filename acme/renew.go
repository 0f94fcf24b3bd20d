package acme

import (
	"context"
	"fmt"
	"time"
)

// Renew requests from the operator (edgecert renew): taken by the loop,
// answered through waiters.go when their work is done. Dry runs bypass the
// loop: they touch no state.

type renewReq struct {
	name  string
	force bool
	reply chan RenewResult
}

// Renew asks for name to be renewed (force: even if not due, and past any
// retry wait) and waits for the outcome, deployment included.
func (m *Manager) Renew(ctx context.Context, name string, force bool) RenewResult {
	req := renewReq{name: name, force: force, reply: make(chan RenewResult, 1)}
	select {
	case m.renews <- req:
	case <-ctx.Done():
		return RenewResult{Name: name, Err: ctx.Err().Error()}
	}
	select {
	case r := <-req.reply:
		return r
	case <-ctx.Done():
		return RenewResult{Name: name, Err: "gave up waiting: " + ctx.Err().Error() + " (the renewal goes on; see status)"}
	}
}

// renew takes a renew request: an order, a retried reload, or "not due".
func (m *Manager) renew(r renewReq) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	e.force = true
	e.wait.awaitOrder(r.reply)
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
