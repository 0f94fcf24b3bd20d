package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// An offer of a newer certificate from the issuer (another host of the
// cluster stored one) is a take-only order, with the certificate served
// now as Current; when the issuer has nothing newer after all, that is no
// failure and nothing is ordered.
func TestOfferIsTakeOnlyAndNothingNewerIsNoFailure(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	first := iss.lastOrder()
	if first.TakeOnly || first.Current != nil {
		t.Fatalf("the first order: take-only %v, current %v", first.TakeOnly, first.Current)
	}
	s := state(h.m, "site")

	iss.mu.Lock()
	iss.fail = fmt.Errorf("serial 0f by b: not newer than the one this host serves: %w", ErrNothingNewer)
	iss.mu.Unlock()
	h.m.Refresh(Offered{Name: "site", Serial: "0f", NotAfter: s.NotAfter.Add(time.Hour), By: "b"})
	waitFor(t, "the take-only order", func() bool { return iss.count() == 2 })
	o := iss.lastOrder()
	if !o.TakeOnly || o.Current == nil || fmt.Sprintf("%x", o.Current.SerialNumber) == "" || o.Asked.IsZero() {
		t.Fatalf("the offer's order: take-only %v, current %v, asked %v", o.TakeOnly, o.Current != nil, o.Asked)
	}
	waitFor(t, "the order to end", func() bool {
		now := state(h.m, "site")
		return now.Phase == "" && now.LastAttempt.After(s.LastAttempt)
	})
	if s := state(h.m, "site"); s.Failures != 0 || s.LastError != "" || s.State != "valid" {
		t.Errorf("after nothing newer: failures %d, last error %q, state %s", s.Failures, s.LastError, s.State)
	}
}

func TestOfferTaken(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	disk := &Info{Serial: "0a", NotAfter: now.Add(60 * 24 * time.Hour)}
	for _, tc := range []struct {
		desc string
		disk *Info
		o    Offered
		want bool
	}{
		{desc: "nothing on the volume", o: Offered{Serial: "0b", NotAfter: now}, want: true},
		{desc: "a placeholder on the volume", disk: &Info{Placeholder: true}, o: Offered{Serial: "0b", NotAfter: now}, want: true},
		{desc: "newer", disk: disk, o: Offered{Serial: "0b", NotAfter: disk.NotAfter.Add(time.Hour)}, want: true},
		{desc: "the one on the volume", disk: disk, o: Offered{Serial: "0a", NotAfter: disk.NotAfter}},
		{desc: "the same serial with a later date (forged or garbled)", disk: disk, o: Offered{Serial: "0a", NotAfter: disk.NotAfter.Add(time.Hour)}},
		{desc: "older", disk: disk, o: Offered{Serial: "0b", NotAfter: disk.NotAfter.Add(-time.Hour)}},
		{desc: "as old", disk: disk, o: Offered{Serial: "0b", NotAfter: disk.NotAfter}},
	} {
		if got := offerNewer(tc.disk, tc.o); got != tc.want {
			t.Errorf("%s: offerNewer = %v, want %v", tc.desc, got, tc.want)
		}
	}
}

// Finding 7 of issue 19: `renew` while orders are held (the cluster
// unreachable) waited until the caller gave up. It answers at once, and
// the renewal is placed once when the hold clears.
func TestRenewWhileHeldAnswersAtOnce(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	h.m.Hold("cluster unreachable: etcd lease lost")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := h.m.Renew(ctx, "site", true)
	if !strings.Contains(res.Err, "cluster unreachable") || !strings.Contains(res.Err, "placed once") {
		t.Fatalf("renew --force while held: %+v", res)
	}
	if n := iss.count(); n != 1 {
		t.Fatalf("%d orders while held, want 1 (the first)", n)
	}
	h.m.Hold("")
	waitFor(t, "the kept renewal", func() bool { return iss.count() == 2 })
	if o := iss.lastOrder(); !o.Forced {
		t.Errorf("the kept renewal was not forced: %+v", o)
	}
}

// Finding 5 of issue 19: an order had no deadline; a hung DNS hook or lock
// wait held its slot for ever. Past EDGECERT_ORDER_TIMEOUT it fails, says
// so, and is retried on the schedule.
func TestOrderTimesOut(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour, gate: make(chan struct{})} // never released
	h := launchWith(t, certs, st, iss, &fakeDeployer{}, nil, func(c *ManagerConfig) { c.OrderTimeout = 300 * time.Millisecond })
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "the order to fail at its deadline", func() bool { return state(h.m, "site").Failures == 1 })
	s := state(h.m, "site")
	if !strings.Contains(s.LastError, "EDGECERT_ORDER_TIMEOUT") || s.NextRetry.IsZero() || s.Phase != "" {
		t.Errorf("after the deadline: error %q, next retry %v, phase %q", s.LastError, s.NextRetry, s.Phase)
	}
}

// An order the issuer holds (the cluster became unreachable before the
// hold reached the loop) is no failure: the renewal asked for is answered
// "held", kept, and placed when the issuer can order again.
func TestOrderHeldByTheIssuerIsKept(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	clk := &clock{now: time.Now()}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := startAt(t, certs, st, iss, &fakeDeployer{}, clk)
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	first := state(h.m, "site").Serial
	iss.mu.Lock()
	iss.fail = &OrderError{Err: fmt.Errorf("cluster: wait for the certificate's lock: %w", ErrHeld)}
	iss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := h.m.Renew(ctx, "site", true)
	if !strings.Contains(res.Message, "held") || !strings.Contains(res.Err, "placed once") {
		t.Fatalf("renew --force held by the issuer: %+v", res)
	}
	if s := state(h.m, "site"); s.Failures != 0 || s.LastError != "" {
		t.Errorf("a held order counted as failed: %d failures, %q", s.Failures, s.LastError)
	}
	iss.mu.Lock()
	iss.fail = nil
	iss.mu.Unlock()
	h.at(clk, clk.Now().Add(heldRecheck+time.Second))
	waitFor(t, "the kept renewal placed", func() bool { return state(h.m, "site").Serial != first })
	if o := iss.lastOrder(); !o.Forced || iss.count() != 3 {
		t.Errorf("the kept renewal: forced %v, %d orders (want 3: first, held, kept)", o.Forced, iss.count())
	}
}

// A rollback done on another host is taken here although older, and holds
// this host's renewal; a certificate stored after the rollback (a renewal
// on any host) releases the hold and is taken.
func TestClusterRollbackTakenAndReleased(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	s := state(h.m, "site")
	h.m.Refresh(Offered{Name: "site", Serial: "0e", NotAfter: s.NotAfter.Add(-time.Hour), By: "b", At: time.Now(), Rollback: true})
	waitFor(t, "the rollback taken", func() bool { return state(h.m, "site").Held != nil })
	if o := iss.lastOrder(); !o.TakeOnly || !o.Rollback || iss.count() != 2 {
		t.Fatalf("the rollback's order: take-only %v, rollback %v, %d orders", o.TakeOnly, o.Rollback, iss.count())
	}
	held := state(h.m, "site")
	rolled := slices.ContainsFunc(held.History, func(ev Event) bool { return ev.Kind == EventRolledBack && ev.Serial == held.Serial })
	issued := slices.ContainsFunc(held.History, func(ev Event) bool { return ev.Kind == EventIssued && ev.Serial == held.Serial })
	if !rolled || issued || held.Held.From != s.Serial {
		t.Errorf("after the cluster rollback: rolled back %v, issued %v, held %+v (from %s)", rolled, issued, held.Held, s.Serial)
	}
	// An ordinary offer older than the hold does not release it.
	h.m.Refresh(Offered{Name: "site", Serial: "0f", NotAfter: held.NotAfter.Add(time.Hour), By: "b", At: held.Held.At.Add(-time.Minute)})
	// One stored after it does.
	h.m.Refresh(Offered{Name: "site", Serial: "10", NotAfter: held.NotAfter.Add(2 * time.Hour), By: "c", At: time.Now().Add(time.Second)})
	waitFor(t, "the hold released", func() bool { return state(h.m, "site").Held == nil && iss.count() == 3 })
	if o := iss.lastOrder(); !o.TakeOnly || o.Rollback {
		t.Errorf("after the release: take-only %v, rollback %v", o.TakeOnly, o.Rollback)
	}
}

// Errors the Manager keeps (state, status, history) go through its Redact
// first; they still are what they were (a Retry-After is honoured).
func TestManagerKeepsRedactedErrors(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour,
		fail: &OrderError{Err: errors.New(`DNS provider: GET "https://api/x?token=m4n4ger-s3cret": 429`), RetryAfter: time.Hour}}
	h := launchWith(t, certs, st, iss, &fakeDeployer{}, nil, func(c *ManagerConfig) {
		c.Redact = func(s string) string { return strings.ReplaceAll(s, "m4n4ger-s3cret", "[redacted]") }
	})
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "the failure", func() bool { return state(h.m, "site").Failures == 1 })
	s := state(h.m, "site")
	if strings.Contains(s.LastError, "m4n4ger-s3cret") || !strings.Contains(s.LastError, "[redacted]") || s.NextRetry.Sub(s.LastAttempt) < 59*time.Minute {
		t.Errorf("after the failure: %q, next retry %v after the attempt", s.LastError, s.NextRetry.Sub(s.LastAttempt))
	}
	for _, ev := range s.History {
		if strings.Contains(ev.Detail, "m4n4ger-s3cret") {
			t.Errorf("history: %+v", ev)
		}
	}
	err := filepath.WalkDir(st, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b, _ := os.ReadFile(p); strings.Contains(string(b), "m4n4ger-s3cret") {
			t.Errorf("the state volume's %s holds the secret", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An offer that comes before the Manager hears of the wish it is for (the
// cluster's watch is quicker than the container list at a restart) is
// kept, and taken when the wish comes.
func TestOfferBeforeTheWishIsTaken(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Refresh(Offered{Name: "site", Serial: "0b", NotAfter: time.Now().Add(90 * 24 * time.Hour), By: "b", At: time.Now()})
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	if o := iss.orders[0]; !o.TakeOnly {
		t.Errorf("the first order was not the offer's take: %+v", o)
	}
}

// A take that fails (etcd cut for a moment while the certificate is read)
// is taken again when its retry is due: the offer came once, and without
// it this host would serve the older certificate until its own renewal
// (seen in the cluster fault campaign: hosts never converged).
func TestAFailedTakeIsTakenAgain(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	clk := &clock{now: time.Now()}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := startAt(t, certs, st, iss, &fakeDeployer{}, clk)
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}})
	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	s := state(h.m, "site")

	iss.mu.Lock()
	iss.fail = errors.New("etcd: read the certificate: rpc error: code = Unavailable desc = error reading from server: EOF")
	iss.mu.Unlock()
	h.m.Refresh(Offered{Name: "site", Serial: "0f", NotAfter: s.NotAfter.Add(time.Hour), By: "b"})
	waitFor(t, "the take to fail", func() bool { return state(h.m, "site").Failures == 1 })
	if n := iss.count(); n != 2 {
		t.Fatalf("%d orders after the failed take, want 2 (no loop)", n)
	}
	retry := state(h.m, "site").NextRetry
	iss.mu.Lock()
	iss.fail = nil
	iss.mu.Unlock()
	h.at(clk, retry.Add(-time.Second))
	time.Sleep(50 * time.Millisecond) // a take before its retry would show here; none must
	if n := iss.count(); n != 2 {
		t.Fatalf("taken again before the retry was due: %d orders", n)
	}
	h.at(clk, retry.Add(time.Second))
	waitFor(t, "taken again", func() bool { return iss.count() == 3 })
	if o := iss.lastOrder(); !o.TakeOnly {
		t.Errorf("the retry is not take-only: %+v", o)
	}
	waitFor(t, "the take to succeed", func() bool { s := state(h.m, "site"); return s.Failures == 0 && s.State == "valid" })
}
