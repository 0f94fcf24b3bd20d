package acme

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockingIssuer issues like fakeIssuer, and runs before() inside the
// order, after the checks that precede it: what happens to the volume
// while the CA works.
type blockingIssuer struct {
	*fakeIssuer
	before func()
}

func (b *blockingIssuer) Obtain(ctx context.Context, o Order) ([]byte, []byte, error) {
	if b.before != nil {
		b.before()
	}
	return b.fakeIssuer.Obtain(ctx, o)
}

func TestManagerRetriesAFailedWriteNotTheOrder(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	clk := &clock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	fi := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	in := filepath.Join(certs, "w")
	// The name's place is taken by a real directory while the order runs
	// (the check before the order saw it free).
	iss := &blockingIssuer{fakeIssuer: fi, before: func() {
		os.Remove(in)
		os.MkdirAll(filepath.Join(in, "leftover"), 0o755)
	}}
	store, _ := NewStore(certs, DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: st, Store: store, Issuer: iss, Deployer: &fakeDeployer{},
		Log: quietLog(), Now: clk.Now})
	runManager(t, m)
	m.Update([]Want{{Name: "w", Domains: []string{"w.example.com"}}})
	waitFor(t, "a write failure", func() bool { return strings.Contains(state(m, "w").LastError, "not written") })
	if n := fi.count(); n != 1 {
		t.Fatalf("orders = %d, want 1", n)
	}
	if _, err := os.Stat(pendingFile(st, "w")); err != nil {
		t.Fatalf("the issued pair is not kept in the state volume: %v", err)
	}
	// Hours of retries order nothing. Each retry is due at once (the backoff
	// is at most an hour) and is waited for: a write still running when the
	// directory leaves would fail after it and put the next retry past a
	// clock that no longer moves (make flake found that).
	for i := 1; i <= 5; i++ {
		clk.set(clk.Now().Add(time.Duration(i) * time.Hour))
		m.poke()
		waitFor(t, "the retry's failure", func() bool { return state(m, "w").NextRetry.After(clk.Now()) })
	}
	if n := fi.count(); n != 1 {
		t.Fatalf("orders after hours of failed writes = %d, want still 1", n)
	}
	// The directory is moved away: the next retry writes the same certificate.
	iss.before = nil
	os.RemoveAll(in)
	clk.set(clk.Now().Add(2 * time.Hour))
	m.poke()
	waitFor(t, "written", func() bool { s := state(m, "w"); return s.State == StateValid })
	s := state(m, "w")
	if fi.count() != 1 || s.LastError != "" || !strings.HasPrefix(kinds(s.History), "write_failed,issued") {
		t.Fatalf("after the directory left: orders %d, %+v, history %s", fi.count(), s, kinds(s.History))
	}
	if _, err := os.Stat(pendingFile(st, "w")); !os.IsNotExist(err) {
		t.Errorf("the pending copy survived the write: %v", err)
	}
}

func TestManagerChecksTheVolumeBeforeOrdering(t *testing.T) {
	certs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(certs, "d", "old-certbot-files"), 0o755); err != nil {
		t.Fatal(err)
	}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, certs, t.TempDir(), iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "d", Domains: []string{"d.example.com"}}})
	waitFor(t, "failing", func() bool { return state(h.m, "d").State == StateFailing })
	if s := state(h.m, "d"); iss.count() != 0 || !strings.Contains(s.LastError, "no order placed") || !strings.Contains(s.LastError, "not a link made by edgecert") {
		t.Fatalf("orders %d, last error %q; want none, naming the directory in the way", iss.count(), s.LastError)
	}
}

// crashAfter sets up a volume and state as a crash leaves them: pair p was
// issued and kept, the volume holds old (and p too, when written).
func crashAfter(t *testing.T, written bool) (certs, st string, old, issued *Info, iss *fakeIssuer) {
	t.Helper()
	certs, st = t.TempDir(), t.TempDir()
	iss = &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(certs, DefaultOwner)
	c1, k1 := iss.ca.issue(t, []string{"c.example.com"}, 90*24*time.Hour)
	old, _ = store.Write("c", c1, k1, false)
	// The state of the old certificate: from another CA, ARI due long ago.
	stale := persisted{Fingerprint: old.Fingerprint, Domains: old.Domains, Directory: "https://ca.test/dir",
		Issued: &issuedSpec{KeyType: "ec256"}, ARI: &ARIWindow{Chosen: time.Now().Add(-time.Hour)}}
	if err := saveState(st, "c", stale); err != nil {
		t.Fatal(err)
	}
	c2, k2 := iss.ca.issue(t, []string{"c.example.com"}, 90*24*time.Hour)
	if err := savePending(st, "c", &pendingPair{Chain: string(c2), Key: string(k2), Directory: "https://ca.test/dir", KeyType: "ec256",
		Reason: "due (ari)", IssuedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	issued = infoOf(mustLeaf(t, c2))
	if written {
		if _, err := store.Write("c", c2, k2, false); err != nil {
			t.Fatal(err)
		}
	}
	return certs, st, old, issued, iss
}

func TestManagerMendsACrashBetweenSwapAndState(t *testing.T) {
	certs, st, _, issued, iss := crashAfter(t, true)
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "c", Domains: []string{"c.example.com"}}})
	waitFor(t, "valid", func() bool { return state(h.m, "c").State == StateValid })
	s := state(h.m, "c")
	if iss.count() != 0 || s.Serial != issued.Serial || s.RenewSource == SourceARI {
		t.Fatalf("after the crash: orders %d, serial %s (want %s), renews %s by %s; want no order and the new certificate's schedule",
			iss.count(), s.Serial, issued.Serial, s.RenewAt, s.RenewSource)
	}
	data, _ := os.ReadFile(stateFile(st, "c"))
	var saved persisted
	if json.Unmarshal(data, &saved) != nil || saved.Fingerprint != issued.Fingerprint {
		t.Errorf("saved state describes %s, want the certificate on the volume", saved.Fingerprint)
	}
	if _, err := os.Stat(pendingFile(st, "c")); !os.IsNotExist(err) {
		t.Errorf("the pending copy survived: %v", err)
	}
}

func TestManagerWritesAPairIssuedBeforeACrash(t *testing.T) {
	certs, st, old, issued, iss := crashAfter(t, false)
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "c", Domains: []string{"c.example.com"}}})
	waitFor(t, "the issued certificate", func() bool { return state(h.m, "c").Serial == issued.Serial })
	if iss.count() != 0 {
		t.Fatalf("orders = %d, want 0: the pair issued before the crash (old serial %s) is written instead", iss.count(), old.Serial)
	}
}

func TestManagerResetsStateThatDescribesAnotherCertificate(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(certs, DefaultOwner)
	c1, k1 := iss.ca.issue(t, []string{"s.example.com"}, 90*24*time.Hour)
	cur, _ := store.Write("s", c1, k1, false)
	// State left from an earlier certificate, of another CA and profile.
	if err := saveState(st, "s", persisted{Fingerprint: "0123", Domains: cur.Domains, Directory: "https://old-ca.test/dir",
		Issued: &issuedSpec{KeyType: "ec256", Profile: "old"}}); err != nil {
		t.Fatal(err)
	}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "s", Domains: []string{"s.example.com"}}})
	waitFor(t, "valid", func() bool { return state(h.m, "s").State == StateValid })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r := h.m.Renew(ctx, "s", false); r.Ordered || iss.count() != 0 {
		t.Fatalf("renew = %+v, orders %d: the volume's valid certificate was judged by a state about another one", r, iss.count())
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runManager runs m until the test ends.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func mustLeaf(t *testing.T, chain []byte) *x509.Certificate {
	t.Helper()
	leaf, _, err := parseChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestManagerDryRunsTakeAnOrderSlot(t *testing.T) {
	ca := newTestCA(t)
	iss := &fakeIssuer{t: t, ca: ca, life: 90 * 24 * time.Hour}
	dry := &fakeIssuer{t: t, ca: ca, life: 90 * 24 * time.Hour, gate: make(chan struct{})}
	store, _ := NewStore(t.TempDir(), DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), MaxOrders: 1, Store: store,
		Issuer: iss, DryRun: dry, Deployer: &fakeDeployer{}, Log: quietLog()})
	runManager(t, m)
	m.Update([]Want{{Name: "a", Domains: []string{"a.example.com"}}})
	waitFor(t, "a valid", func() bool { return state(m, "a").State == StateValid })
	done := make(chan RenewResult, 1)
	go func() { done <- m.DryRun(context.Background(), "a") }()
	waitFor(t, "the dry run at the CA", func() bool { return dry.count() == 1 })
	m.Update([]Want{{Name: "a", Domains: []string{"a.example.com"}}, {Name: "b", Domains: []string{"b.example.com"}}})
	waitFor(t, "b wanted", func() bool { return state(m, "b").State == StatePlaceholder })
	if n := iss.count(); n != 1 {
		t.Fatalf("orders while the dry run holds the only slot = %d, want still 1", n)
	}
	dry.gate <- struct{}{}
	if r := <-done; r.Err != "" {
		t.Fatalf("dry run: %+v", r)
	}
	waitFor(t, "b ordered once the slot is free", func() bool { return state(m, "b").State == StateValid })
}

func TestManagerForcedRenewalWaitsForTheCAsRetryAfter(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour,
		fail: &OrderError{Err: errors.New("urn:ietf:params:acme:error:rateLimited: too many certificates"), RetryAfter: 3 * time.Hour}}
	h := start(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "r", Domains: []string{"r.example.com"}}})
	waitFor(t, "rate limited", func() bool { return state(h.m, "r").State == StateFailing })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if r := h.m.Renew(ctx, "r", true); r.Err == "" || !strings.Contains(r.Err, "rate limited") {
			t.Fatalf("renew --force under a Retry-After = %+v, want a refusal naming it", r)
		}
	}
	if n := iss.count(); n != 1 {
		t.Fatalf("orders = %d, want 1: forced renewals do not go past the CA's Retry-After", n)
	}
}

func TestManagerShutdownSavesAnOrderPastTheCA(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	// Like lego's Obtain, this CA does not stop when the context ends.
	fi := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	gate := make(chan struct{})
	iss := &blockingIssuer{fakeIssuer: fi, before: func() { <-gate }}
	store, _ := NewStore(certs, DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: st, Store: store, Issuer: iss, Deployer: &fakeDeployer{}, Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	m.Update([]Want{{Name: "t", Domains: []string{"t.example.com"}}})
	waitFor(t, "the order at the CA", func() bool { return state(m, "t").Phase == PhaseOrdering })
	cancel()    // SIGTERM while the CA works
	close(gate) // the CA answers after all
	<-done
	saved, err := loadState(st, "t")
	info, rerr := store.Read("t")
	if err != nil || rerr != nil || info.Placeholder || saved.Fingerprint != info.Fingerprint {
		t.Fatalf("after shutdown: volume %+v (%v), state %+v (%v); want the issued certificate written and described", info, rerr, saved, err)
	}
	if p, _ := loadPending(st, "t"); p != nil {
		t.Errorf("the pending copy survived a clean shutdown")
	}
}

func TestManagerBoundsForcedRenewals(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(t.TempDir(), DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), Store: store, Issuer: iss,
		Deployer: &fakeDeployer{}, Log: quietLog(), ForcedLimit: 2})
	runManager(t, m)
	m.Update([]Want{{Name: "f", Domains: []string{"f.example.com"}}})
	waitFor(t, "valid", func() bool { return state(m, "f").State == StateValid })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 {
		if r := m.Renew(ctx, "f", true); r.Err != "" || !r.Ordered {
			t.Fatalf("forced renewal %d = %+v", i+1, r)
		}
	}
	if r := m.Renew(ctx, "f", true); r.Err == "" || !strings.Contains(r.Err, "EDGECERT_FORCED_RENEWALS") {
		t.Fatalf("a third forced renewal within the week = %+v, want a refusal naming the bound", r)
	}
	if n := iss.count(); n != 3 {
		t.Fatalf("orders = %d, want 3 (the first and two forced)", n)
	}
}

func TestManagerSwapsBetweenReloads(t *testing.T) {
	files := &sync.RWMutex{}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(t.TempDir(), DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), Store: store, Issuer: iss,
		Deployer: &fakeDeployer{}, Log: quietLog(), Swaps: files})
	runManager(t, m)
	files.RLock() // a proxy is testing its configuration
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		released <- time.Now()
		files.RUnlock()
	}()
	m.Update([]Want{{Name: "s", Domains: []string{"s.example.com"}}})
	waitFor(t, "valid", func() bool { return state(m, "s").State == StateValid })
	at := <-released
	for _, ev := range state(m, "s").History {
		if ev.Kind == EventIssued && ev.At.Before(at) {
			t.Fatalf("the pair was made current at %v, before the reload let go of the files at %v", ev.At, at)
		}
	}
}

func TestManagerKeepsANameBoundToItsDomains(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := startAt(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{}, clk)
	owner := Want{Name: "shop", Domains: []string{"shop.example.com"}, Containers: []string{"shop"}}
	h.m.Update([]Want{owner})
	waitFor(t, "the owner's certificate", func() bool { return state(h.m, "shop").State == StateValid })
	// The owner is redeployed; meanwhile another container asks for the name
	// with names of its own.
	intruder := Want{Name: "shop", Domains: []string{"other.example.com"}, Containers: []string{"intruder"}}
	h.m.Update([]Want{intruder})
	waitFor(t, "a conflict", func() bool { return len(h.m.Conflicts()) == 1 })
	if c := h.m.Conflicts()[0]; c.Containers[0] != "intruder" || !strings.Contains(c.Err, "edgecert forget shop") {
		t.Fatalf("conflict = %+v", c)
	}
	if s := state(h.m, "shop"); iss.count() != 1 || s.State != StateUnused || s.Domains[0] != "shop.example.com" {
		t.Fatalf("while the name is bound: orders %d, %+v; want no order, the owner's certificate kept", iss.count(), s)
	}
	// The owner comes back, with a name more: its own wish, accepted.
	owner.Domains = append(owner.Domains, "www.shop.example.com")
	h.m.Update([]Want{owner})
	waitFor(t, "the owner's new names", func() bool { return iss.count() == 2 && len(state(h.m, "shop").Domains) == 2 })
	if n := len(h.m.Conflicts()); n != 0 {
		t.Fatalf("conflicts after the owner returned = %d", n)
	}
	// The operator releases the name: the other wish is taken at once.
	h.m.Update([]Want{intruder})
	waitFor(t, "a conflict again", func() bool { return len(h.m.Conflicts()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r := h.m.Forget(ctx, "shop"); r.Err != "" {
		t.Fatalf("forget: %+v", r)
	}
	h.at(clk, clk.Now().Add(2*time.Minute)) // past the wait for a second changed wish in a day
	waitFor(t, "the released name ordered for the other names", func() bool {
		s := state(h.m, "shop")
		return iss.count() == 3 && s.State == StateValid && s.Domains[0] == "other.example.com"
	})
}
