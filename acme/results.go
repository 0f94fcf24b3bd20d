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
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.certs[r.name]
	switch r.kind {
	case phaseChange:
		if e.ordering {
			e.phase = r.phase
		}
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
	if r.err != nil {
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
		e.deployedFP, e.deployErr, e.deployFailures, e.deployRetryAt = r.fp, "", 0, time.Time{}
		if r.grp != e.group {
			e.deployedFP = "" // proven for the group it had; the new one is next
		}
		// A proxy loaded its configuration: whatever made other deployments
		// fail (a config naming files not written yet, say) may be gone.
		// Check them now; a proxy that already serves them is not reloaded.
		for _, o := range m.certs {
			if o.deployErr != "" && !o.deploying {
				o.deployRetryAt = time.Time{}
			}
		}
	}
	if e.wait.awaitsProof(r.fp) {
		res := RenewResult{Name: e.name, Ordered: true, Serial: e.disk.Serial, NotAfter: e.disk.NotAfter, Message: "certificate issued, written and proven served"}
		if r.err != nil {
			res.Message = "certificate issued and written, but the reload was not proven"
			res.Err = r.err.Error()
		}
		if e.wait.noOrder {
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
	m.ordering--
	e.ordering, e.phase = false, ""
	e.st.LastAttempt = now
	if r.err != nil {
		var oe *OrderError
		var ra time.Duration
		permanent := false
		if errors.As(r.err, &oe) {
			ra, permanent = oe.RetryAfter, oe.Permanent
		}
		e.st.Failures++
		e.st.LastError, e.st.Permanent, e.st.FailedSpec = r.err.Error(), permanent, r.fp
		e.st.RetryAt = retryAt(now, e.st.Failures, ra, permanent, rand.Float64)
		m.record(e, Event{Kind: EventOrderFailed, Detail: r.err.Error(), TookMS: r.took.Milliseconds()})
		m.save(e)
		m.log.Error("order failed; will retry", "cert", e.name, "err", r.err, "permanent", permanent,
			"failures", e.st.Failures, "retry_at", e.st.RetryAt.Format(time.RFC3339))
		e.wait.orderFailed(RenewResult{Name: e.name, Ordered: true, Message: "order failed", Err: r.err.Error()})
		return
	}
	o, _ := wish(e, m.def, now)
	e.disk = r.info
	e.st = persisted{Domains: r.info.Domains, Directory: m.cfg.Directory, Issued: &issuedSpec{KeyType: r.info.KeyType, Profile: o.Profile},
		LastAttempt: now, LastSuccess: now, UnusedSince: e.st.UnusedSince, History: e.st.History}
	m.record(e, Event{Kind: EventIssued, Serial: r.info.Serial, Detail: e.orderReason, TookMS: r.took.Milliseconds()})
	m.save(e)
	m.log.Info("certificate obtained and written", "cert", e.name, "domains", strings.Join(r.info.Domains, ","),
		"serial", r.info.Serial, "not_after", r.info.NotAfter.Format(time.RFC3339), "reason", e.orderReason,
		"preflight_ms", r.pre.Milliseconds(), "lego_ms", r.took.Milliseconds())
	e.deployRetryAt, e.deployFailures = time.Time{}, 0
	e.wait.orderWritten(r.info.Fingerprint)
	if e.want == nil {
		// Renewed in its grace period: nobody waits for a reload.
		e.wait.proven(RenewResult{Name: e.name, Ordered: true, Serial: r.info.Serial, NotAfter: r.info.NotAfter,
			Message: "certificate issued and written (unused: no reload)"})
	}
}
