package acme

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A rollback puts back the version before the current one with one swap,
// has it deployed, holds automatic renewal (across a restart), refuses what
// it must, and `renew` releases the hold.
func TestRollbackHoldsRenewalUntilRenew(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	clk := &clock{now: time.Now()}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{}
	h := startAt(t, certs, st, iss, dep, clk)
	want := []Want{{Name: "site", Domains: []string{"example.com"}, Containers: []string{"app"}}}
	h.m.Update(want)
	waitFor(t, "first deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	first := state(h.m, "site").Serial
	ctx := context.Background()

	if res := h.m.Rollback(ctx, "site", ""); !strings.Contains(res.Err, "no earlier certificate") {
		t.Fatalf("rollback with one version: %+v; want a refusal", res)
	}
	if res := h.m.Renew(ctx, "site", true); res.Err != "" {
		t.Fatalf("forced renewal: %+v", res)
	}
	second := state(h.m, "site").Serial
	if second == first {
		t.Fatal("the forced renewal did not change the serial")
	}
	if res := h.m.Rollback(ctx, "site", "ffff"); !strings.Contains(res.Err, "no kept version with serial ffff; kept: "+first) {
		t.Fatalf("rollback to an unknown serial: %+v", res)
	}

	_, before := dep.last()
	res := h.m.Rollback(ctx, "site", "")
	if res.Err != "" || res.Serial != first || !strings.Contains(res.Message, "rolled back to serial "+first+" and proven served") {
		t.Fatalf("rollback: %+v; want serial %s proven", res, first)
	}
	if d, n := dep.last(); n != before+1 || d.Serial != first {
		t.Fatalf("deployments %d (was %d), last serial %s; want one more, of %s", n, before, d.Serial, first)
	}
	s := state(h.m, "site")
	if s.Serial != first || s.Held == nil || s.Held.From != second || !s.RenewAt.IsZero() || kinds(s.History[len(s.History)-2:]) != "rolled_back,reload_proven" {
		t.Fatalf("after rollback: serial %s held %+v renew_at %v history %s", s.Serial, s.Held, s.RenewAt, kinds(s.History))
	}
	if info, err := h.m.cfg.Store.Read("site"); err != nil || info.Serial != first {
		t.Fatalf("the volume holds %v, %v; want serial %s current", info, err, first)
	}

	// Held: even far past its renewal time, nothing is ordered, and a
	// restart keeps the hold.
	orders := iss.count()
	h.at(clk, clk.Now().Add(80*24*time.Hour))
	h.stop()
	h = startAt(t, certs, st, iss, &fakeDeployer{}, clk)
	h.m.Update(want)
	waitFor(t, "status after restart", func() bool { return state(h.m, "site").Serial == first })
	if s := state(h.m, "site"); s.Held == nil || iss.count() != orders {
		t.Fatalf("after a restart 80 days on: held %+v, orders %d (was %d); want held, no order", s.Held, iss.count(), orders)
	}

	// renew releases the hold, and the certificate, now due, is renewed.
	if res := h.m.Renew(ctx, "site", false); res.Err != "" || !res.Ordered {
		t.Fatalf("renew after the hold: %+v; want an order", res)
	}
	if s := state(h.m, "site"); s.Held != nil || s.Serial == first || s.Serial == second {
		t.Fatalf("after renew: held %+v serial %s; want released and a third certificate", s.Held, s.Serial)
	}
}

// A version that has expired, or for other names, is refused, and
// nothing changes.
func TestRollbackRefusesExpiredAndOtherNames(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	clk := &clock{now: time.Now()}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 10 * 24 * time.Hour}
	h := startAt(t, certs, st, iss, &fakeDeployer{}, clk)
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com"}}})
	waitFor(t, "issued", func() bool { return state(h.m, "site").State == "valid" })
	short := state(h.m, "site").Serial
	iss.mu.Lock()
	iss.life = 90 * 24 * time.Hour
	iss.mu.Unlock()
	ctx := context.Background()
	if res := h.m.Renew(ctx, "site", true); res.Err != "" {
		t.Fatalf("forced renewal: %+v", res)
	}
	long := state(h.m, "site").Serial

	h.at(clk, clk.Now().Add(11*24*time.Hour))
	if res := h.m.Rollback(ctx, "site", short); !strings.Contains(res.Err, "refused: serial "+short+" expired") {
		t.Fatalf("rollback to an expired version: %+v", res)
	}
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com", "www.example.com"}}})
	waitFor(t, "reissued for two names", func() bool { s := state(h.m, "site"); return s.Serial != long && s.State == "valid" })
	cur := state(h.m, "site").Serial
	if res := h.m.Rollback(ctx, "site", long); !strings.Contains(res.Err, "refused: serial "+long+" is for example.com; site is for example.com, www.example.com") {
		t.Fatalf("rollback to a version for other names: %+v", res)
	}
	if s := state(h.m, "site"); s.Held != nil || s.Serial != cur {
		t.Fatalf("a refused rollback changed things: held %+v serial %s, want %s", s.Held, s.Serial, cur)
	}
}
