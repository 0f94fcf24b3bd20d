package acme

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Rollback: the operator puts back an earlier version of a certificate and
// automatic renewal is held until `edgecert renew NAME`. In cluster mode the
// rollback is shared (the Rollbacks publisher): every host takes the
// rolled-back certificate as the cluster's, and holds its renewal too; a
// renewal on any host after that releases every host's hold.

// Rollbacks shares a rollback with the other hosts (the cluster).
type rollbackPublisher interface {
	PublishRollback(ctx context.Context, r SharedRollback) error
}

// SharedRollback is a rollback as the other hosts need it.
type SharedRollback struct {
	Name             string
	Domains          []string
	KeyType, Profile string
	Chain, Key       []byte
	Serial, From     string
	At               time.Time
}

// reasonClusterRollback is the reason of a take-only order for a rollback
// done on another host.
const reasonClusterRollback = "cluster rollback"

// publishWait bounds the sharing of a rollback.
const publishWait = 30 * time.Second

// Rollback puts back an earlier version of name (serial "" : the newest
// before the current one), proves it served, and holds automatic renewal
// until Renew releases it.
func (m *Manager) Rollback(ctx context.Context, name, serial string) RenewResult {
	return m.ask(ctx, renewReq{name: name, rollback: true, serial: serial, reply: make(chan RenewResult, 1)}, " (the reload goes on; see status)")
}

// rollback takes a Rollback request. m.mu is held.
func (m *Manager) rollback(ctx context.Context, wg *sync.WaitGroup, r renewReq) {
	now := m.now()
	fail := func(format string, args ...any) {
		r.reply <- RenewResult{Name: r.name, Err: fmt.Sprintf(format, args...)}
	}
	e, ok := m.certs[r.name]
	var o Order
	if ok {
		o, ok = wish(e, m.def, now)
	}
	switch {
	case !ok:
		fail("no certificate named %q is wanted or renewed (see edgecert status)", r.name)
		return
	case e.ordering || e.writing || e.pending != nil:
		fail("an order for %s is in flight or being written; roll back once it has ended", e.name)
		return
	case e.disk == nil:
		fail("%s has no certificate on the volume", e.name)
		return
	}
	versions, err := m.cfg.Store.Versions(e.name)
	if err != nil {
		fail("%v", err)
		return
	}
	var v *Info
	var kept []string
	for _, c := range versions {
		if c.Placeholder || c.Serial == e.disk.Serial || (r.serial == "" && c.Version > e.disk.Version) {
			continue // without a serial: only back in time
		}
		kept = append(kept, c.Serial)
		if v == nil && (r.serial == "" || strings.EqualFold(strings.TrimLeft(r.serial, "0"), strings.TrimLeft(c.Serial, "0"))) {
			v = c
		}
	}
	switch {
	case v == nil && len(kept) == 0:
		fail("%s has no earlier certificate on the volume to roll back to", e.name)
		return
	case v == nil:
		fail("%s has no kept version with serial %s; kept: %s", e.name, r.serial, strings.Join(kept, ", "))
		return
	case !now.Before(v.NotAfter):
		fail("refused: serial %s expired at %s", v.Serial, v.NotAfter.UTC().Format(time.RFC3339))
		return
	case !SameNames(v.Domains, o.Domains):
		fail("refused: serial %s is for %s; %s is for %s", v.Serial, strings.Join(v.Domains, ", "), e.name, strings.Join(o.Domains, ", "))
		return
	}
	from := e.disk.Serial
	info, err := m.cfg.Store.Restore(e.name, v.Version, e.want != nil && e.want.CombinedPEM)
	if err != nil {
		fail("%v", err)
		return
	}
	e.disk = info
	e.st.Hold = &Hold{Serial: info.Serial, From: from, At: now}
	e.st.Fingerprint, e.st.Domains = info.Fingerprint, info.Domains
	e.st.ARI, e.st.ARINextPoll, e.st.ARIError = nil, time.Time{}, ""
	e.deployRetryAt, e.deployFailures = time.Time{}, 0
	m.record(e, Event{Kind: EventRolledBack, Serial: info.Serial, Detail: "from serial " + from + " by the operator"})
	m.save(e)
	m.log.Warn("certificate rolled back by the operator; automatic renewal held until `edgecert renew`", "cert", e.name,
		"serial", info.Serial, "from", from, "not_after", info.NotAfter.Format(time.RFC3339))
	e.wait.awaitRollback(r.reply, info.Fingerprint)
	m.shareRollback(ctx, wg, e, o, from)
}

// shareRollback publishes e's rollback from serial from to the other hosts,
// in the background (a worker of Run's). m.mu is held.
func (m *Manager) shareRollback(ctx context.Context, wg *sync.WaitGroup, e *entry, o Order, from string) {
	if m.cfg.Rollbacks == nil {
		return
	}
	chain, key, err := m.cfg.Store.Pair(e.name)
	if err != nil {
		m.log.Error("the rollback is not shared with the other hosts", "cert", e.name, "err", err)
		return
	}
	r := SharedRollback{Name: e.name, Domains: o.Domains, KeyType: o.KeyType, Profile: o.Profile, Chain: chain, Key: key,
		Serial: e.disk.Serial, From: from, At: e.st.Hold.At}
	wg.Add(1)
	go func() {
		defer wg.Done()
		pctx, cancel := context.WithTimeout(ctx, publishWait)
		defer cancel()
		if err := m.cfg.Rollbacks.PublishRollback(pctx, r); err != nil {
			m.log.Error("the rollback is not shared with the other hosts; they keep the certificate rolled back from", "cert", r.Name, "err", err)
			return
		}
		m.log.Info("rollback shared: every host takes it and holds its renewal", "cert", r.Name, "serial", r.Serial)
	}()
}
