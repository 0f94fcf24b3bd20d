package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAutoRenewal: a 2-minute certificate (Pebble's "shortlived" profile,
// asked for by label) renews by itself before it expires, as ARI suggests,
// with `replaces`; nginx serves the new one after a proven reload.
func TestAutoRenewal(t *testing.T) {
	t.Parallel()
	pebble, err := startPebble("pebble-renew")
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "renew")
	s.pebble = "pebble-renew"
	d := s.domain("short")
	roots := s.up("short", d)
	s.startApp("app", map[string]string{"domains": d, "name": "short", "profile": "shortlived"})

	var first string
	var notAfter time.Time
	if err := waitUntil(150*time.Second, func() error {
		leaf, err := s.verified(roots, d)
		if err != nil {
			return err
		}
		first, notAfter = serialOf(leaf), leaf.NotAfter
		return nil
	}); err != nil {
		t.Fatalf("first certificate never served: %v", err)
	}
	if life := time.Until(notAfter); life > 3*time.Minute {
		t.Fatalf("the certificate lives %v: the shortlived profile label was not used", life)
	}
	if err := waitUntil(10*time.Second, func() error {
		if c, _ := s.cert("short"); !c.Deployed {
			return errString("not proven yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Pebble's window spans the short lifetime, so the renewal may already
	// be under way here: then the status shows the order's reason, and the
	// workers are no longer the first certificate's.
	pids := s.workerPIDs()
	if leaf, err := s.verified(roots, d); err != nil || serialOf(leaf) != first {
		pids = nil // the renewal came first: see below
	}
	c, _ := s.cert("short")
	t.Logf("first serial %s expires %s; renewal planned %s (%s)", first, notAfter.Format(time.TimeOnly), c.RenewAt.Format(time.TimeOnly), c.RenewSource)
	if (c.RenewSource != "ari" && c.RenewSource != "due (ari)") || c.RenewAt.After(notAfter) {
		t.Fatalf("renewal = %s (%s), want an ARI time before expiry %s", c.RenewAt, c.RenewSource, notAfter)
	}

	// Nobody acts: edgecert renews on its own, before expiry.
	var second string
	if err := waitUntil(time.Until(notAfter)+5*time.Second, func() error {
		leaf, err := s.verified(roots, d)
		if err != nil {
			return err
		}
		if serialOf(leaf) == first {
			return errString("still the first certificate")
		}
		second = serialOf(leaf)
		return nil
	}); err != nil {
		t.Fatalf("no renewal was served: %v", err)
	}
	if now := time.Now(); now.After(notAfter) {
		t.Fatalf("the renewal was served at %s, after the first certificate expired at %s", now.Format(time.TimeOnly), notAfter.Format(time.TimeOnly))
	}
	t.Logf("MEASURE auto_renewal served %s before expiry", time.Until(notAfter).Round(time.Millisecond))
	if pids == nil {
		// The workers before the renewal's reload, as edgecert's report of
		// it saw them with docker top; checked against docker top now.
		c, _ := s.cert("short")
		for _, r := range c.Reloads {
			for _, st := range r.Steps {
				if before, _, ok := strings.Cut(st.Detail, "->"); ok && st.Step == "workers_new" {
					for _, f := range strings.Fields(strings.Trim(strings.TrimSpace(before), "[]")) {
						if p, err := strconv.Atoi(f); err == nil {
							pids = append(pids, p)
						}
					}
				}
			}
		}
		t.Logf("the renewal came before the test looked at nginx's workers; the reload report says they were %v", pids)
		if len(pids) == 0 {
			t.Fatalf("no workers_new step with the old PIDs in the renewal's reload report: %+v", c.Reloads)
		}
	}
	if after := s.workerPIDs(); slices.ContainsFunc(after, func(p int) bool { return slices.Contains(pids, p) }) || len(after) == 0 {
		t.Errorf("worker PIDs %v -> %v: want all new", pids, after)
	}
	logs := s.logs()
	if !strings.Contains(logs, `reason="due (ari)"`) || !strings.Contains(logs, "replaces=true") {
		t.Errorf("the renewal was not an ARI-driven replacement order:\n%s", grepLines(logs, "ordering certificate"))
	}
	plog, _ := docker("logs", pebble)
	if !strings.Contains(plog, "is a replacement of") {
		t.Errorf("Pebble saw no replacement order (RFC 9773 replaces):\n%s", grepLines(plog, "ARI"))
	}
	// Status names what is served. Pebble's window for the renewed
	// certificate starts at its issue too, so a third may come at any
	// moment: both are read together until they agree.
	if err := waitUntil(30*time.Second, func() error {
		c, _ := s.cert("short")
		leaf, err := s.verified(roots, d)
		if err != nil {
			return err
		}
		if c.Serial != serialOf(leaf) {
			return fmt.Errorf("status serial %s, served %s (the renewal was %s)", c.Serial, serialOf(leaf), second)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// TestParallelIssuance: ten containers with distinct certificates, there
// together, are issued in parallel and cause far fewer than ten reloads.
func TestParallelIssuance(t *testing.T) {
	t.Parallel()
	if _, err := startPebble("pebble-many"); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "many")
	s.pebble = "pebble-many"
	var domains []string
	for i := range 10 {
		domains = append(domains, s.domain("c"+strconv.Itoa(i)))
	}
	s.point(domains...)
	s.startNginx()
	roots := caRoots(t, s.pebble)
	for i, d := range domains {
		s.writeConf(fmt.Sprintf("10-c%d.conf", i), tlsServer(d, d))
	}
	// The ten apps are up when edgecert starts, so its first full list sees
	// all ten together (Docker itself starts containers one by one, seconds
	// apart on a busy host, which would measure Docker rather than edgecert).
	var apps []string
	for i, d := range domains {
		apps = append(apps, s.createApp("app"+strconv.Itoa(i), map[string]string{"domains": d}))
	}
	if out, err := docker(append([]string{"start"}, apps...)...); err != nil {
		t.Fatalf("start the apps: %s", out)
	}
	started := time.Now()
	s.startEdgecert("EDGECERT_MAX_ORDERS=10")
	if err := waitUntil(3*time.Minute, func() error {
		for _, d := range domains {
			if _, err := s.verified(roots, d); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("not every certificate was served: %v", err)
	}
	wall := time.Since(started)
	if err := waitUntil(10*time.Second, func() error {
		for _, c := range s.status().Certificates {
			if !c.Deployed {
				return errString(c.Name + " not proven yet")
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// From edgecert's log: when each order began and ended. Parallel means
	// many orders were in flight at the same moment (one by one, never more
	// than one). The span against the sum of the orders' own times is only
	// reported: Pebble answers some orders in 0.4 s and others after lego's
	// 5 s poll, so that ratio measures the CA's luck, not edgecert.
	logs := s.logs()
	begun := certTimes(logs, "ordering certificate", "")
	done := certTimes(logs, "certificate obtained and written", "")
	if len(begun) != 10 || len(done) != 10 {
		t.Fatalf("%d orders begun, %d done; want 10 each", len(begun), len(done))
	}
	var sum time.Duration
	var first, last time.Time
	for name, b := range begun {
		sum += done[name].Sub(b)
		if first.IsZero() || b.Before(first) {
			first = b
		}
		if done[name].After(last) {
			last = done[name]
		}
	}
	inFlight := maxInFlight(begun, done)
	reloads := strings.Count(logs, "reload proven")
	span, limit := reloadLimit(slices.Collect(maps.Values(done)))
	t.Logf("MEASURE parallel_10 wall_ms=%d orders_span_ms=%d sum_of_order_ms=%d max_in_flight=%d completion_span_ms=%d reloads=%d",
		wall.Milliseconds(), last.Sub(first).Milliseconds(), sum.Milliseconds(), inFlight, span.Milliseconds(), reloads)
	if inFlight < 8 {
		t.Errorf("at most %d of 10 orders were in flight at once (EDGECERT_MAX_ORDERS=10): not parallel", inFlight)
	}
	if reloads < 1 || reloads > limit || reloads >= 10 {
		t.Errorf("%d proven reloads for 10 certificates completed over %v; want 1 to %d, never one per certificate", reloads, span, limit)
	}
}

// certTimes maps each certificate to the time of its last log line with msg
// (and with also in it, when also is not empty).
func certTimes(logs, msg, also string) map[string]time.Time {
	times := map[string]time.Time{}
	for _, l := range grepLines(logs, msg) {
		if !strings.Contains(l, also) {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, logValue(l, msg, "time")); err == nil {
			times[logValue(l, msg, "cert")] = at
		}
	}
	return times
}

// maxInFlight is the largest number of [begun, done] intervals that overlap.
func maxInFlight(begun, done map[string]time.Time) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for name, b := range begun {
		edges = append(edges, edge{b, +1}, edge{done[name], -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// reloadLimit is the most reloads a batch of certificates written at the
// given times may cause, and the span of those times. A batch closes at
// most one bound (EDGECERT_RELOAD_DEBOUNCE, 1 s in these tests) after its
// first certificate, or at once when no other order is in flight, and what
// is written while a proxy reloads waits for that reload and goes into the
// next one: every batch but the last covers at least a bound of the span.
func reloadLimit(written []time.Time) (span time.Duration, limit int) {
	if len(written) > 0 {
		lo, hi := slices.MinFunc(written, time.Time.Compare), slices.MaxFunc(written, time.Time.Compare)
		span = hi.Sub(lo)
	}
	return span, int(span/time.Second) + 2
}

// TestOutage: the CA goes away while a renewal is due. edgecert backs off on
// the advised schedule (a restart keeps the wait), nginx keeps serving the
// old certificate, and when the CA returns edgecert recovers by itself.
func TestOutage(t *testing.T) {
	t.Parallel()
	pebble, err := startPebble("pebble-outage")
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "outage")
	s.pebble = "pebble-outage"
	d := s.domain("site")
	roots := s.up("site", d)
	s.startApp("app", map[string]string{"domains": d, "name": "site", "profile": "shortlived"})
	s.waitServed(roots, d, 150*time.Second)
	if out, err := docker("stop", pebble); err != nil {
		t.Fatal(out)
	}
	// Pebble's renewal window for a 2-minute certificate opens at issuance,
	// so a renewal may have completed before the CA stopped: the old
	// certificate is whichever one is current and served once it is gone.
	var first string
	if err := waitUntil(time.Minute, func() error {
		c, ok := s.cert("site")
		if !ok {
			return errString("no status for site")
		}
		leaf, err := s.served(d)
		if err != nil {
			return err
		}
		if got := serialOf(leaf[0]); got != c.Serial {
			return errString("nginx serves " + got + ", the volume holds " + c.Serial)
		}
		first = c.Serial
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The renewal falls due (under two minutes) and fails: a retry is planned.
	var failed certView
	if err := waitUntil(3*time.Minute, func() error {
		failed, _ = s.cert("site")
		if failed.NextRetry.IsZero() {
			return errString("no failed attempt yet: " + failed.State)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if in := time.Until(failed.NextRetry); in < 30*time.Second || in > 70*time.Second {
		t.Fatalf("next retry in %v, want about a minute (the first step of the backoff)", in)
	}
	if err := waitUntil(30*time.Second, func() error {
		leaf, err := s.served(d)
		if err != nil {
			return err
		}
		if got := serialOf(leaf[0]); got != first {
			return errString("serial " + got)
		}
		return nil
	}); err != nil {
		t.Fatalf("during the outage nginx does not serve the old serial %s: %v", first, err)
	}

	// Restart edgecert inside the backoff: the wait is kept, not reset.
	if out, err := docker("restart", s.edgecert); err != nil {
		t.Fatal(out)
	}
	restarted := time.Now()
	if err := waitUntil(30*time.Second, func() error {
		c, _ := s.cert("site")
		if !c.NextRetry.Equal(failed.NextRetry) {
			return errString(fmt.Sprintf("next retry %s, want the persisted %s", c.NextRetry, failed.NextRetry))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The CA comes back (a new Pebble: new root, no memory of the account).
	if out, err := docker("start", pebble); err != nil {
		t.Fatal(out)
	}
	if err := waitPebble("pebble-outage"); err != nil {
		t.Fatal(err)
	}
	roots = caRoots(t, "pebble-outage")
	if err := waitUntil(3*time.Minute, func() error {
		leaf, err := s.verified(roots, d)
		if err != nil {
			return err
		}
		if serialOf(leaf) == first {
			return errString("still the old certificate")
		}
		return nil
	}); err != nil {
		t.Fatalf("no recovery after the CA returned: %v", err)
	}

	logs := s.logs()
	attempts := logTimes(logs, "ordering certificate", "")
	failures := strings.Count(logs, "order failed")
	var afterRestart []time.Time
	for _, at := range attempts {
		if at.After(restarted) {
			afterRestart = append(afterRestart, at)
		}
	}
	t.Logf("MEASURE outage attempts=%d failures=%d first_after_restart=%v persisted_retry=%v",
		len(attempts), failures, afterRestart, failed.NextRetry.Format(time.TimeOnly))
	if failures > 2 {
		t.Errorf("%d failed orders during an outage of about a minute: no backoff", failures)
	}
	if len(afterRestart) == 0 || afterRestart[0].Before(failed.NextRetry.Add(-time.Second)) {
		t.Errorf("first attempt after the restart at %v, before the persisted retry time %v", afterRestart, failed.NextRetry)
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// logTimes returns the time= of every edgecert log line containing msg
// (and also, when also is not empty).
func logTimes(logs, msg, also string) []time.Time {
	var out []time.Time
	for _, l := range grepLines(logs, msg) {
		if !strings.Contains(l, also) {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, logValue(l, msg, "time")); err == nil {
			out = append(out, t)
		}
	}
	return out
}
