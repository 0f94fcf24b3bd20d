package acme

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// What the loop does with a finished piece of work. m.mu is held in each.

func (m *Manager) apply(r result) {
	r.err, r.werr = m.redacted(r.err), m.redacted(r.werr)
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.certs[r.name]
	switch r.kind {
	case phaseChange:
		if e.ordering {
			e.phase = r.phase
		}
	case writeDone:
		m.applyWrite(e, r)
	case deployDone:
		if r.seq == e.deploySeq && e.deploying {
			m.applyDeploy(e, r)
		} // else: abandoned by the watchdog, whose failure stands

	case ariDone:
		m.applyARI(e, r)
	case orderDone:
		m.applyOrder(e, r)
	}
}

func (m *Manager) applyARI(e *entry, r result) {
	e.polling = false
	if e.disk == nil || e.disk.Fingerprint != r.fp {
		return // the certificate changed meanwhile; the new one is asked about next
	}
	now := m.now()
	switch {
	case errors.Is(r.err, ErrNoARI):
		e.st.ARI, e.st.ARIError = nil, ""
		e.st.ARINextPoll = now.Add(ariMaxPoll)
	case r.err != nil:
		e.st.ARIError = r.err.Error()
		e.st.ARINextPoll = now.Add(ariErrorPoll)
		m.log.Warn("renewal info unavailable; the lifetime ratio applies until it is", "cert", e.name, "err", r.err)
	default:
		chosen := chooseInWindow(e.st.ARI, r.ari.Start, r.ari.End, e.disk.NotBefore, e.disk.NotAfter, randInt63n)
		changed := e.st.ARI == nil || !e.st.ARI.Chosen.Equal(chosen)
		e.st.ARI = &ARIWindow{Start: r.ari.Start, End: r.ari.End, Chosen: chosen, Explanation: r.ari.Explanation, FetchedAt: now}
		e.st.ARIError = ""
		e.st.ARINextPoll = nextARIPoll(now, r.ari.RetryAfter)
		if changed {
			at, src := e.renewal()
			m.log.Info("renewal scheduled", "cert", e.name, "renew_at", at.Format(time.RFC3339), "source", src,
				"window_start", r.ari.Start.Format(time.RFC3339), "window_end", r.ari.End.Format(time.RFC3339))
		}
	}
	m.save(e)
}

// abandonDeploy fails a deployment that has run past DeployTimeout, so that
// the failure is seen (status, notice) and the next one is not held back;
// its result, if it ever comes, is ignored.
func (m *Manager) abandonDeploy(e *entry) {
	m.log.Error("deployment did not finish in time; abandoned", "cert", e.name, "after", m.cfg.DeployTimeout.String())
	m.applyDeploy(e, result{kind: deployDone, name: e.name, fp: e.disk.Fingerprint, seq: e.deploySeq,
		err: fmt.Errorf("the deployment did not finish within %s: a proxy or the Docker Engine is stuck (see the reload reports)", m.cfg.DeployTimeout)})
}

func (m *Manager) applyDeploy(e *entry, r result) {
	now := m.now()
	e.deploying = false
	e.lastDeploy = now
	if errors.Is(r.err, ErrUnserved) {
		// No retry mends a proxy's configuration: a hint, checked again
		// when a proxy next proves another certificate, on renew, and hourly.
		if hint := r.err.Error(); hint != e.unserved {
			e.unserved = hint
			m.record(e, Event{Kind: EventUnserved, Serial: e.disk.Serial, Detail: hint})
			m.save(e)
		}
		e.deployErr, e.deployFailures, e.deployRetryAt = "", 0, now.Add(unservedRecheck)
	} else if r.err != nil {
		first := e.deployErr == ""
		e.deployErr = r.err.Error()
		e.deployRetryAt = now.Add(deployBackoff[min(e.deployFailures, len(deployBackoff)-1)])
		e.deployFailures++
		m.log.Error("deployment failed; will retry", "cert", e.name, "err", r.err, "retry_at", e.deployRetryAt.Format(time.RFC3339))
		if first || e.wait.awaitsProof(r.fp) {
			m.record(e, Event{Kind: EventReloadFailed, Serial: e.disk.Serial, Detail: r.err.Error()})
			m.save(e)
		}
	} else {
		if e.wait.awaitsProof(r.fp) || e.deployErr != "" {
			// A new certificate served, or a failure mended (not a mere check).
			m.record(e, Event{Kind: EventReloadProven, Serial: e.disk.Serial})
			m.save(e)
		}
		e.deployedFP, e.deployErr, e.deployFailures, e.deployRetryAt, e.unserved = r.fp, "", 0, time.Time{}, ""
		if r.grp != e.group {
			e.deployedFP = "" // proven for the group it had; the new one is next
		}
		// A proxy loaded its configuration: whatever made other deployments
		// fail (a config naming files not written yet, say) may be gone.
		// Checked at the next look at what is due (once for a thousand
		// proofs); a proxy that already serves them is not reloaded.
		m.recheck = true
	}
	if e.wait.awaitsProof(r.fp) {
		res := RenewResult{Name: e.name, Ordered: true, Serial: e.disk.Serial, NotAfter: e.disk.NotAfter, Message: "certificate issued, written and proven served"}
		if errors.Is(r.err, ErrUnserved) {
			res.Message = "certificate issued and written, but no proxy serves its names (see the hint)"
			res.Err = r.err.Error()
		} else if r.err != nil {
			res.Message = "certificate issued and written, but the reload was not proven"
			res.Err = r.err.Error()
		}
		if e.wait.rollback {
			res.Ordered, res.Message = false, fmt.Sprintf("rolled back to serial %s and proven served; automatic renewal is held until `edgecert renew %s`", e.disk.Serial, e.name)
			if r.err != nil {
				res.Message = "rolled back to serial " + e.disk.Serial + ", but the reload was not proven (it is retried)"
			}
		} else if e.wait.noOrder {
			res.Ordered, res.Message = false, "not due (no order); its reload was retried and is proven served"
			if r.err != nil {
				res.Message = "not due (no order); its reload was retried and is still not proven"
			}
		}
		e.wait.proven(res)
	}
}

func (m *Manager) applyOrder(e *entry, r result) {
	now := m.now()
	<-m.slots
	e.ordering, e.phase = false, ""
	e.st.LastAttempt = now
	switch {
	case errors.Is(r.err, ErrHeld):
		// The issuer cannot order now (the cluster became unreachable
		// before the hold reached the loop): no failure; a forced renewal
		// is kept, and the need is ordered when the hold clears.
		e.heldUntil = now.Add(heldRecheck)
		if r.force {
			e.force, e.forced = true, true
		}
		if r.take {
			e.refresh, e.refreshRollback, e.refreshAt = true, e.refreshRollback || r.rollback, time.Time{}
		}
		m.log.Warn("order held; nothing ordered", "cert", e.name, "err", r.err)
		e.wait.orderFailed(heldResult(e.name, r.err.Error()))
	case errors.Is(r.err, ErrNothingNewer):
		// Offered a newer certificate that turned out not to be (not for
		// this wish, or not newer): nothing changes, nothing is ordered.
		m.log.Info("the issuer has nothing newer to take; no order", "cert", e.name, "err", r.err)
		e.wait.orderFailed(RenewResult{Name: e.name, Message: "nothing newer to take (no order)"})
	case r.err != nil:
		m.orderFailed(e, r)
		if r.take {
			// The offer is not made again (another host stored it once):
			// taken again when the failure's retry is due.
			e.refresh, e.refreshRollback, e.refreshAt = true, e.refreshRollback || r.rollback, e.st.RetryAt
		}
	case r.werr != nil:
		e.pending = r.pair
		m.writeFailed(e, r.werr)
		e.wait.orderFailed(RenewResult{Name: e.name, Ordered: true, Message: "certificate issued, but not written to the volume; the write is retried (no new order)",
			Err: r.werr.Error()})
	default:
		m.issued(e, r.info, r.pair)
		m.log.Info("certificate obtained and written", "cert", e.name, "domains", strings.Join(r.info.Domains, ","),
			"serial", r.info.Serial, "not_after", r.info.NotAfter.Format(time.RFC3339), "reason", r.pair.Reason,
			"preflight_ms", r.pre.Milliseconds(), "acme_ms", r.took.Milliseconds())
	}
}

func (m *Manager) orderFailed(e *entry, r result) {
	now := m.now()
	var oe *OrderError
	var ra time.Duration
	permanent, config, notPlaced := false, false, false
	if errors.As(r.err, &oe) {
		ra, permanent, config, notPlaced = oe.RetryAfter, oe.Permanent, oe.Config, oe.NotPlaced
	}
	e.st.Failures++
	e.st.LastError, e.st.Permanent, e.st.FailedSpec = r.err.Error(), permanent, r.fp
	e.st.RetryAt = retryAt(now, retrySteps(e.st.Failures, config, notPlaced), ra, permanent, rand.Float64)
	e.st.LimitedUntil = time.Time{}
	if ra > 0 {
		e.st.LimitedUntil = e.st.RetryAt
	}
	m.record(e, Event{Kind: EventOrderFailed, Detail: r.err.Error(), TookMS: r.took.Milliseconds()})
	m.save(e)
	m.log.Error("order failed; will retry", "cert", e.name, "err", r.err, "permanent", permanent,
		"failures", e.st.Failures, "retry_at", e.st.RetryAt.Format(time.RFC3339))
	e.wait.orderFailed(RenewResult{Name: e.name, Ordered: true, Message: "order failed", Err: r.err.Error()})
}

// writeBackoff spaces the retries of a write that failed (a full or
// read-only volume, a directory in the way): the issued pair waits in the
// state volume meanwhile.
var writeBackoff = []time.Duration{15 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}

func (m *Manager) writeFailed(e *entry, err error) {
	first := e.writeErr == ""
	e.writeErr = err.Error()
	e.writeRetryAt = m.now().Add(writeBackoff[min(e.writeFailures, len(writeBackoff)-1)])
	e.writeFailures++
	m.log.Error("issued certificate not written to the volume; the write is retried, nothing is ordered again", "cert", e.name,
		"err", err, "retry_at", e.writeRetryAt.Format(time.RFC3339))
	if first {
		m.record(e, Event{Kind: EventWriteFailed, Detail: err.Error()})
		m.save(e)
	}
}

func (m *Manager) applyWrite(e *entry, r result) {
	e.writing = false
	if r.werr != nil {
		m.writeFailed(e, r.werr)
		return
	}
	m.log.Info("issued certificate written to the volume at last; no new order", "cert", e.name, "serial", r.info.Serial)
	m.issued(e, r.info, e.pending)
}

// issued makes info, written from p, e's current certificate: its state is
// saved, then its pending pair removed, and it is handed on for deployment.
func (m *Manager) issued(e *entry, info *Info, p *pendingPair) {
	now := m.now()
	e.disk = info
	e.st = persisted{Fingerprint: info.Fingerprint, Domains: info.Domains, Directory: p.Directory,
		Issued:      &issuedSpec{KeyType: info.KeyType, Profile: p.Profile, Challenge: p.Challenge, DNS: p.DNS},
		LastAttempt: now, LastSuccess: now, UnusedSince: e.st.UnusedSince, History: e.st.History,
		WishOrders: e.st.WishOrders, ForcedOrders: e.st.ForcedOrders}
	detail := p.Reason + " (http-01)"
	switch p.Challenge {
	case ChallengeDNS:
		detail = p.Reason + " (dns-01 through " + p.DNS + ")"
	case ChallengeDNSPersist:
		detail = p.Reason + " (dns-persist-01)"
	}
	if p.Reason == reasonClusterRollback {
		// Rolled back on another host: held here too, until a renewal
		// anywhere releases it.
		e.st.Hold = &Hold{Serial: info.Serial, From: p.From, At: now}
		m.record(e, Event{Kind: EventRolledBack, Serial: info.Serial, Detail: "from serial " + p.From + " on another host of the cluster"})
	} else {
		m.record(e, Event{Kind: EventIssued, Serial: info.Serial, Detail: detail, TookMS: p.TookMS})
	}
	m.save(e)
	if err := removePending(m.cfg.StateDir, e.name); err != nil {
		m.log.Warn("cannot remove the written certificate's pending copy", "cert", e.name, "err", err)
	}
	e.pending, e.writeErr, e.writeFailures, e.writeRetryAt = nil, "", 0, time.Time{}
	e.deployRetryAt, e.deployFailures = time.Time{}, 0
	e.wait.orderWritten(info.Fingerprint)
	if e.want == nil {
		// Renewed in its grace period: nobody waits for a reload.
		e.wait.proven(RenewResult{Name: e.name, Ordered: true, Serial: info.Serial, NotAfter: info.NotAfter,
			Message: "certificate issued and written (unused: no reload)"})
	}
}

// adoptPending looks, when e is loaded, for a pair issued before a crash or
// a stop: already current on the volume (the state was not saved), it is
// adopted; not yet written, it is written next; expired, it is dropped.
// m.mu is held.
func (m *Manager) adoptPending(e *entry, p *pendingPair, err error) {
	if err != nil {
		m.log.Error("cannot read the pending copy of an issued certificate", "cert", e.name, "err", err)
		return
	}
	if p == nil {
		return
	}
	leaf, _, err := parseChain([]byte(p.Chain))
	switch {
	case err != nil:
		m.log.Error("the pending copy of an issued certificate is unreadable; dropped", "cert", e.name, "err", err)
		_ = removePending(m.cfg.StateDir, e.name)
	case e.disk != nil && e.disk.Fingerprint == infoOf(leaf).Fingerprint:
		m.log.Info("certificate written before a restart, its state was not: state saved now; no new order", "cert", e.name, "serial", e.disk.Serial)
		m.issued(e, e.disk, p)
	case m.now().After(leaf.NotAfter):
		m.log.Warn("the pending copy of an issued certificate has expired; dropped", "cert", e.name)
		_ = removePending(m.cfg.StateDir, e.name)
	default:
		m.log.Info("certificate issued before a restart but not written; writing it now, no new order", "cert", e.name)
		e.pending = p
	}
}

// redacted is err with the configured redaction applied to its text; it
// still is (errors.Is, errors.As) what err was.
func (m *Manager) redacted(err error) error {
	if err == nil || m.cfg.Redact == nil {
		return err
	}
	return redactedError{err: err, text: m.cfg.Redact(err.Error())}
}

type redactedError struct {
	err  error
	text string
}

func (e redactedError) Error() string { return e.text }
func (e redactedError) Unwrap() error { return e.err }
