package acme

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeIssuer struct {
	t    testing.TB
	ca   *testCA
	life time.Duration

	mu     sync.Mutex
	orders []Order
	fail   error
	ari    func(leaf *x509.Certificate) (*RenewalInfo, error) // nil: ErrNoARI
	polls  int
	gate   chan struct{} // non-nil: each order waits for a value (the CA is slow)
}

func (f *fakeIssuer) Obtain(ctx context.Context, o Order) ([]byte, []byte, error) {
	f.mu.Lock()
	f.orders = append(f.orders, o)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, nil, f.fail
	}
	curve := elliptic.P256()
	if o.KeyType == "ec384" {
		curve = elliptic.P384()
	}
	c, k := f.ca.issueCurve(f.t, o.Domains, f.life, curve)
	return c, k, nil
}

func (f *fakeIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*RenewalInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.ari == nil {
		return nil, ErrNoARI
	}
	return f.ari(leaf)
}

func (f *fakeIssuer) lastOrder() Order {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.orders[len(f.orders)-1]
}

func (f *fakeIssuer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orders)
}

type fakeDeployer struct {
	mu   sync.Mutex
	seen []Deployment
	fail error
}

func (f *fakeDeployer) Deploy(ctx context.Context, d Deployment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, d)
	return f.fail
}

func (f *fakeDeployer) last() (Deployment, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		return Deployment{}, 0
	}
	return f.seen[len(f.seen)-1], len(f.seen)
}

type harness struct {
	m      *Manager
	iss    *fakeIssuer
	dep    *fakeDeployer
	cancel context.CancelFunc
	done   chan struct{}
}

// clock is a settable time for the manager under test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// at moves the harness's clock and wakes the manager.
func (h *harness) at(c *clock, t time.Time) {
	c.set(t)
	h.m.poke()
}

func start(t *testing.T, certs, state string, iss *fakeIssuer, dep *fakeDeployer) *harness {
	return startAt(t, certs, state, iss, dep, nil)
}

func startAt(t *testing.T, certs, state string, iss *fakeIssuer, dep *fakeDeployer, clk *clock) *harness {
	t.Helper()
	h := launch(t, certs, state, iss, dep, clk)
	h.dep = dep
	return h
}

// launch runs a Manager with any Deployer until the test ends.
func launch(t *testing.T, certs, state string, iss *fakeIssuer, dep Deployer, clk *clock) *harness {
	t.Helper()
	return launchWith(t, certs, state, iss, dep, clk, nil)
}

// launchWith is launch with the configuration changed by mod first.
func launchWith(t *testing.T, certs, state string, iss *fakeIssuer, dep Deployer, clk *clock, mod func(*ManagerConfig)) *harness {
	t.Helper()
	store, err := NewStore(certs, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ManagerConfig{Directory: "https://ca.test/dir", StateDir: state, MaxOrders: 2,
		Store: store, Issuer: iss, Deployer: dep, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if clk != nil {
		cfg.Now = clk.Now
		iss.ca.now = clk.Now
	}
	if mod != nil {
		mod(&cfg)
	}
	m := NewManager(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{m: m, iss: iss, cancel: cancel, done: make(chan struct{})}
	go func() { m.Run(ctx); close(h.done) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// Generous: reached only when something is wrong, and a loaded machine
	// (make flake: -race, -cpu 1, CPU burners) takes seconds over an fsync.
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func state(m *Manager, name string) CertStatus {
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	return CertStatus{}
}

func TestManagerIssuesDeploysAndReusesAfterRestart(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{}
	h := start(t, certs, st, iss, dep)
	h.m.Update([]Want{{Name: "site", Domains: []string{"example.com", "www.example.com"}, Containers: []string{"app"}}})

	waitFor(t, "valid and deployed", func() bool { s := state(h.m, "site"); return s.State == "valid" && s.Deployed })
	d, n := dep.last()
	s := state(h.m, "site")
	if n != 1 || d.Fingerprint == "" || d.Serial != s.Serial {
		t.Fatalf("deployments = %d, last %+v; want one of serial %s", n, d, s.Serial)
	}
	if iss.count() != 1 {
		t.Fatalf("orders = %d, want 1", iss.count())
	}
	h.stop()

	// A restart orders nothing: the volume already holds a valid certificate.
	dep2 := &fakeDeployer{}
	h2 := start(t, certs, st, iss, dep2)
	h2.m.Update([]Want{{Name: "site", Domains: []string{"www.example.com", "example.com"}, Containers: []string{"app"}}})
	waitFor(t, "redeploy check", func() bool { _, n := dep2.last(); return n == 1 })
	if got := state(h2.m, "site"); got.Serial != s.Serial || got.State != "valid" {
		t.Fatalf("after restart: %+v, want the same serial %s, valid", got, s.Serial)
	}
	if hist := kinds(state(h2.m, "site").History); hist != "issued,reload_proven" {
		t.Fatalf("history after restart = %s, want issued,reload_proven (kept in the state volume)", hist)
	}
	if iss.count() != 1 {
		t.Fatalf("orders after restart = %d, want still 1", iss.count())
	}

	// Adding a domain orders again at once.
	h2.m.Update([]Want{{Name: "site", Domains: []string{"example.com", "www.example.com", "api.example.com"}}})
	waitFor(t, "reorder for new domains", func() bool { return len(state(h2.m, "site").Domains) == 3 && iss.count() == 2 })

	// A container going away keeps the certificate, shown as unused.
	h2.m.Update(nil)
	waitFor(t, "unused", func() bool { return state(h2.m, "site").State == "unused" })
}

func TestManagerFailureBacksOffAndPersists(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: time.Hour, fail: errors.New("urn:ietf:params:acme:error:connection: refused")}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "x", Domains: []string{"x.example.com"}}})
	waitFor(t, "failing", func() bool { return state(h.m, "x").State == "failing" })
	s := state(h.m, "x")
	if until := time.Until(s.NextRetry); until < 50*time.Second || until > 70*time.Second {
		t.Errorf("next retry in %v, want about 1 minute", until)
	}
	if s.Serial == "" {
		t.Errorf("no placeholder on the volume while the order fails: %+v", s)
	}
	h.stop()

	// The backoff survives a restart: no new order before the persisted time.
	h2 := start(t, certs, st, iss, &fakeDeployer{})
	h2.m.Update([]Want{{Name: "x", Domains: []string{"x.example.com"}}})
	waitFor(t, "state loaded", func() bool { return state(h2.m, "x").State == "failing" })
	if iss.count() != 1 {
		t.Fatalf("orders = %d after restart inside the backoff, want 1", iss.count())
	}

	// A forced renewal bypasses the wait and reports the outcome.
	iss.mu.Lock()
	iss.fail = nil
	iss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := h2.m.Renew(ctx, "x", true)
	if res.Err != "" || !res.Ordered || res.Serial == "" {
		t.Fatalf("Renew = %+v, want a successful order", res)
	}
	if got := state(h2.m, "x"); got.State != "valid" || got.LastError != "" {
		t.Fatalf("after forced renewal: %+v", got)
	}
}

func TestManagerHoldDelaysOrders(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	h := start(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{})
	h.m.Hold("no proxy container is running (nginx)")
	h.m.Update([]Want{{Name: "h", Domains: []string{"h.example.com"}}})
	waitFor(t, "placeholder with a reason to wait", func() bool {
		s := state(h.m, "h")
		return s.State == "placeholder" && s.Waiting != ""
	})
	if n := iss.count(); n != 0 {
		t.Fatalf("orders while held = %d, want 0", n)
	}
	h.m.Hold("")
	waitFor(t, "valid after release", func() bool { return state(h.m, "h").State == "valid" })
}

type failingPreflight struct{ calls int }

func (f *failingPreflight) Preflight(ctx context.Context, domains []string) error {
	f.calls++
	return errors.New("nginx answered 404 for the probe token")
}

func TestManagerPreflightFailurePlacesNoOrder(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(t.TempDir(), DefaultOwner)
	pre := &failingPreflight{}
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), PreflightWait: 300 * time.Millisecond,
		Store: store, Issuer: iss, Deployer: &fakeDeployer{}, Preflight: pre, Log: quietLog()})
	runManager(t, m)
	m.Update([]Want{{Name: "p", Domains: []string{"p.example.com"}}})
	waitFor(t, "failing after preflight", func() bool { return state(m, "p").State == "failing" })
	if s := state(m, "p"); !strings.Contains(s.LastError, "preflight") || !strings.Contains(s.LastError, "404") {
		t.Errorf("last error = %q, want the preflight's reason", s.LastError)
	}
	if iss.count() != 0 || pre.calls < 2 {
		t.Errorf("orders = %d, preflight calls = %d; want no order after repeated checks", iss.count(), pre.calls)
	}
}

// slowPreflight answers 404 at once the first time, then hangs until its
// context ends, as a proxy does on a loaded machine.
type slowPreflight struct{ calls atomic.Int32 }

func (f *slowPreflight) Preflight(ctx context.Context, domains []string) error {
	if f.calls.Add(1) == 1 {
		return errors.New("GET http://p.example.com/.well-known/acme-challenge/x answered 404")
	}
	<-ctx.Done()
	return fmt.Errorf("GET http://p.example.com/.well-known/acme-challenge/x: %w", ctx.Err())
}

func TestManagerPreflightReportsTheTellingFailure(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(t.TempDir(), DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), PreflightWait: 300 * time.Millisecond,
		Store: store, Issuer: iss, Deployer: &fakeDeployer{}, Preflight: &slowPreflight{}, Log: quietLog()})
	runManager(t, m)
	m.Update([]Want{{Name: "p", Domains: []string{"p.example.com"}}})
	waitFor(t, "failing after preflight", func() bool { return state(m, "p").State == "failing" })
	if s := state(m, "p"); !strings.Contains(s.LastError, "404") || strings.Contains(s.LastError, "deadline") {
		t.Errorf("last error = %q, want the 404 seen before the deadline, not the deadline", s.LastError)
	}
}

func TestManagerRenewReportsDeployFailureAndUnknownNames(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{fail: errors.New("config test failed")}
	h := start(t, t.TempDir(), t.TempDir(), iss, dep)
	h.m.Update([]Want{{Name: "y", Domains: []string{"y.example.com"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res := h.m.Renew(ctx, "nope", true); res.Err == "" {
		t.Errorf("Renew(unknown) = %+v, want an error", res)
	}
	res := h.m.Renew(ctx, "y", true)
	if res.Err != "config test failed" || res.Serial == "" {
		t.Fatalf("Renew = %+v, want the deploy error with the new serial", res)
	}
	if s := state(h.m, "y"); s.State != "failing" || s.DeployError == "" || s.Deployed {
		t.Fatalf("status = %+v, want failing with a deploy error", s)
	}
	orders := iss.count()
	if res := h.m.Renew(ctx, "y", false); res.Ordered || res.Err != "config test failed" {
		t.Errorf("Renew without force of a current certificate that is not served = %+v, want its reload retried (and failing again), no order", res)
	}
	// The operator fixes the proxy: renew without --force retries the
	// reload at once (not at the end of its backoff) and orders nothing.
	h.dep.mu.Lock()
	h.dep.fail = nil
	h.dep.mu.Unlock()
	_, deploys := h.dep.last()
	res = h.m.Renew(ctx, "y", false)
	if res.Ordered || res.Err != "" || !strings.Contains(res.Message, "proven") || iss.count() != orders {
		t.Fatalf("Renew after the fix = %+v (orders %d -> %d), want the reload proven and no order", res, orders, iss.count())
	}
	if _, n := h.dep.last(); n != deploys+1 {
		t.Errorf("deployments %d -> %d, want one more", deploys, n)
	}
	if s := state(h.m, "y"); s.State != "valid" || !s.Deployed {
		t.Errorf("status = %+v, want valid and deployed", s)
	}
	// Served and current: now renew without force says it is not due.
	if res := h.m.Renew(ctx, "y", false); res.Ordered || res.Err != "" || !strings.Contains(res.Message, "not due") {
		t.Errorf("Renew of a served, current certificate = %+v, want not due", res)
	}
}

func TestManagerFollowsARIAndReplaces(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	var firstSerial string
	iss.ari = func(leaf *x509.Certificate) (*RenewalInfo, error) {
		now := time.Now()
		if firstSerial == "" || leaf.SerialNumber.Text(16) == firstSerial {
			firstSerial = leaf.SerialNumber.Text(16)
			// The CA wants this one replaced now (say, it will be revoked).
			return &RenewalInfo{Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour), RetryAfter: 6 * time.Hour}, nil
		}
		return &RenewalInfo{Start: now.Add(50 * 24 * time.Hour), End: now.Add(52 * 24 * time.Hour), RetryAfter: 6 * time.Hour}, nil
	}
	h := start(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "a", Domains: []string{"a.example.com"}}})
	waitFor(t, "ARI-driven renewal", func() bool {
		s := state(h.m, "a")
		return iss.count() == 2 && s.State == "valid" && s.RenewSource == SourceARI && s.ARI != nil
	})
	o := iss.lastOrder()
	if o.Replaces == nil || o.Replaces.SerialNumber.Text(16) != firstSerial {
		t.Fatalf("the renewal did not name the certificate it replaces: %+v", o.Replaces)
	}
	s := state(h.m, "a")
	if s.RenewAt.Before(time.Now().Add(50*24*time.Hour)) || s.RenewAt.After(time.Now().Add(52*24*time.Hour)) {
		t.Errorf("renew_at = %v, want inside the new window (50-52 days)", s.RenewAt)
	}
	if iss.count() != 2 {
		t.Errorf("orders = %d, want 2", iss.count())
	}
}

func TestManagerChangedWishOrdersAtOnceEvenInBackoff(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour, fail: errors.New("connection refused")}
	h := startAt(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{}, clk)
	h.m.Update([]Want{{Name: "k", Domains: []string{"k.example.com"}}})
	waitFor(t, "failing", func() bool { return state(h.m, "k").State == "failing" })
	iss.mu.Lock()
	iss.fail = nil
	iss.mu.Unlock()
	// Same wish: waits for the backoff. A new key type: orders now.
	h.m.Update([]Want{{Name: "k", Domains: []string{"k.example.com"}, KeyType: "ec384"}})
	waitFor(t, "ec384 certificate", func() bool { s := state(h.m, "k"); return s.State == "valid" && s.KeyType == "ec384" })
	if o := iss.lastOrder(); o.KeyType != "ec384" {
		t.Fatalf("order key type = %q", o.KeyType)
	}
	// And back to the default: a wish that changes again within a day waits
	// a minute after the last such order (labels flapping are not ordered
	// at each flip).
	h.m.Update([]Want{{Name: "k", Domains: []string{"k.example.com"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.m.Renew(ctx, "nosuch", false) // a round trip: the loop has seen the new wish
	if n := iss.count(); n != 2 {
		t.Fatalf("orders right after the flip back = %d, want 2", n)
	}
	h.at(clk, clk.Now().Add(61*time.Second))
	waitFor(t, "ec256 certificate", func() bool { return iss.count() == 3 && state(h.m, "k").State == "valid" })
	// A third change within the day: ten minutes after the last.
	h.m.Update([]Want{{Name: "k", Domains: []string{"k.example.com"}, Profile: "tlsserver"}})
	h.at(clk, clk.Now().Add(5*time.Minute))
	h.m.Renew(ctx, "nosuch", false)
	if n := iss.count(); n != 3 {
		t.Fatalf("orders 5 minutes after a third change = %d, want still 3", n)
	}
	h.at(clk, clk.Now().Add(6*time.Minute))
	waitFor(t, "tlsserver certificate", func() bool { return iss.count() == 4 && state(h.m, "k").Profile == "tlsserver" })
}

func TestManagerRetryClassification(t *testing.T) {
	tests := []struct {
		desc      string
		err       error
		wantIn    time.Duration
		permanent bool
	}{
		{desc: "rate limited: Retry-After wins", err: &OrderError{Err: errors.New("rateLimited"), RetryAfter: 3 * time.Hour}, wantIn: 3 * time.Hour},
		{desc: "rejected name: permanent, daily", err: &OrderError{Err: errors.New("rejectedIdentifier"), Permanent: true}, wantIn: 24 * time.Hour, permanent: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			iss := &fakeIssuer{t: t, ca: newTestCA(t), life: time.Hour, fail: tc.err}
			h := start(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{})
			h.m.Update([]Want{{Name: "r", Domains: []string{"r.example.com"}}})
			waitFor(t, "failing", func() bool { return state(h.m, "r").State == "failing" })
			s := state(h.m, "r")
			if in := time.Until(s.NextRetry); in < tc.wantIn-time.Minute || in > tc.wantIn || s.Permanent != tc.permanent || s.RenewSource != SourceRetry {
				t.Errorf("next retry in %v, permanent %v, source %q; want %v, %v, retry", in, s.Permanent, s.RenewSource, tc.wantIn, tc.permanent)
			}
			if iss.count() != 1 {
				t.Errorf("orders = %d, want 1 (no hot loop)", iss.count())
			}
		})
	}
}

func TestManagerUnusedGrace(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	t0 := clk.Now()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 24 * time.Hour} // due after 12h (half: under 10 days)
	h := startAt(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{}, clk)
	h.m.Update([]Want{{Name: "u", Domains: []string{"u.example.com"}}})
	waitFor(t, "valid", func() bool { return state(h.m, "u").State == "valid" })
	h.m.Update(nil)
	waitFor(t, "unused", func() bool { return state(h.m, "u").State == "unused" })
	if s := state(h.m, "u"); !s.RenewedTill.Equal(t0.Add(7 * 24 * time.Hour)) {
		t.Fatalf("renewed_until = %v, want 7 days after it became unused", s.RenewedTill)
	}
	// Due inside the grace period: renewed.
	h.at(clk, t0.Add(13*time.Hour))
	waitFor(t, "renewal in grace", func() bool { return iss.count() == 2 && state(h.m, "u").State == "unused" })
	// Due after the grace period: left alone, files kept.
	h.at(clk, t0.Add(8*24*time.Hour))
	// A renew request passes through the manager's loop, after the wake-up:
	// its answer proves the loop has looked at the new time.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res := h.m.Renew(ctx, "u", false); res.Err == "" {
		t.Fatalf("renew after the grace period = %+v, want a refusal", res)
	}
	if n := iss.count(); n != 2 {
		t.Fatalf("orders after the grace period = %d, want still 2", n)
	}
	if s := state(h.m, "u"); s.Serial == "" || !s.RenewAt.IsZero() {
		t.Fatalf("status after grace = %+v, want the files kept and no renewal time", s)
	}
}

// blockingDeployer fails every deployment until it is opened.
type blockingDeployer struct {
	mu    sync.Mutex
	open  map[string]bool
	calls map[string]int
}

func (b *blockingDeployer) Deploy(ctx context.Context, d Deployment) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[d.Name]++
	if !b.open[d.Name] {
		return errors.New("nginx -t: cannot load certificate of another site")
	}
	return nil
}

func TestManagerSuccessfulDeployRechecksFailedOnes(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &blockingDeployer{open: map[string]bool{}, calls: map[string]int{}}
	m := launch(t, t.TempDir(), t.TempDir(), iss, dep, nil).m

	m.Update([]Want{{Name: "early", Domains: []string{"early.example.com"}}})
	waitFor(t, "early fails to deploy", func() bool { return state(m, "early").DeployError != "" })
	// A later certificate deploys fine: the early one is checked again at
	// once instead of waiting out its 15 s backoff.
	dep.mu.Lock()
	dep.open["early"], dep.open["late"] = true, true
	dep.mu.Unlock()
	m.Update([]Want{{Name: "early", Domains: []string{"early.example.com"}}, {Name: "late", Domains: []string{"late.example.com"}}})
	waitFor(t, "both deployed", func() bool { return state(m, "early").Deployed && state(m, "late").Deployed })
}

func kinds(h []Event) string {
	var k []string
	for _, e := range h {
		k = append(k, string(e.Kind))
	}
	return strings.Join(k, ",")
}

func TestManagerGroupChangeIsProvenOnTheNewProxies(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{}
	h := start(t, t.TempDir(), t.TempDir(), iss, dep)
	h.m.Update([]Want{{Name: "g", Domains: []string{"g.example.com"}, Group: "a"}})
	waitFor(t, "deployment to group a", func() bool { d, _ := dep.last(); return d.Group == "a" && state(h.m, "g").Deployed })
	h.m.Update([]Want{{Name: "g", Domains: []string{"g.example.com"}, Group: "b"}})
	waitFor(t, "deployment to group b", func() bool { d, _ := dep.last(); return d.Group == "b" && state(h.m, "g").Deployed })
	// Recreated with another group: unwanted for a moment, then wanted.
	h.m.Update(nil)
	waitFor(t, "unused", func() bool { return state(h.m, "g").State == "unused" })
	h.m.Update([]Want{{Name: "g", Domains: []string{"g.example.com"}, Group: "c"}})
	waitFor(t, "deployment to group c", func() bool { d, _ := dep.last(); return d.Group == "c" && state(h.m, "g").Deployed })
	if iss.count() != 1 {
		t.Errorf("%d orders, want 1: a new group needs a reload, not a certificate", iss.count())
	}
}

// gatedDeployer holds each deployment until the test lets it go.
type gatedDeployer struct {
	gate  chan struct{}
	calls chan Deployment
}

func (g *gatedDeployer) Deploy(ctx context.Context, d Deployment) error {
	g.calls <- d
	select {
	case <-g.gate:
	case <-ctx.Done():
	}
	return nil
}

func TestManagerGroupChangeDuringADeployment(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &gatedDeployer{gate: make(chan struct{}), calls: make(chan Deployment, 10)}
	m := launch(t, t.TempDir(), t.TempDir(), iss, dep, nil).m

	m.Update([]Want{{Name: "g", Domains: []string{"g.example.com"}, Group: "a"}})
	if d := <-dep.calls; d.Group != "a" {
		t.Fatalf("first deployment to %q, want a", d.Group)
	}
	// While group a's deployment is in flight, the certificate moves to b.
	m.Update([]Want{{Name: "g", Domains: []string{"g.example.com"}, Group: "b"}})
	waitFor(t, "the move to b", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.certs["g"].group == "b"
	})
	dep.gate <- struct{}{} // a's deployment succeeds, for a
	select {
	case d := <-dep.calls:
		if d.Group != "b" {
			t.Fatalf("second deployment to %q, want b", d.Group)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the certificate was never deployed to its new group b")
	}
	close(dep.gate)
	waitFor(t, "proven for b", func() bool { return state(m, "g").Deployed })
}

// stuckDeployer never finishes a deployment until it is released or the
// Manager stops.
type stuckDeployer struct {
	mu      sync.Mutex
	calls   int
	release chan struct{}
}

func (s *stuckDeployer) Deploy(ctx context.Context, d Deployment) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stuckDeployer) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

func TestManagerAbandonsAStuckDeployment(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &stuckDeployer{release: make(chan struct{})}
	h := launch(t, t.TempDir(), t.TempDir(), iss, dep, clk)
	h.m.Update([]Want{{Name: "s", Domains: []string{"s.example.com"}}})
	waitFor(t, "the deployment to start", func() bool { return dep.count() == 1 })
	if s := state(h.m, "s"); s.State != StateValid || s.DeployError != "" {
		t.Fatalf("while deploying: %+v", s)
	}
	// Past DeployTimeout (2 minutes by default) the watchdog fails it.
	h.at(clk, clk.Now().Add(2*time.Minute+time.Second))
	waitFor(t, "failing after the deploy timeout", func() bool { return state(h.m, "s").State == StateFailing })
	s := state(h.m, "s")
	if !strings.Contains(s.DeployError, "did not finish within 2m0s") || kinds(s.History) != "issued,reload_failed" {
		t.Fatalf("after the watchdog: deploy_error %q, history %s", s.DeployError, kinds(s.History))
	}
	// The next attempt goes out after the backoff, though the first never returned.
	h.at(clk, clk.Now().Add(16*time.Second))
	waitFor(t, "a second deployment", func() bool { return dep.count() == 2 })
	close(dep.release)
	waitFor(t, "proven", func() bool { s := state(h.m, "s"); return s.State == StateValid && s.Deployed })
}

func TestManagerRenewDuringAnOrderJoinsIt(t *testing.T) {
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour, gate: make(chan struct{})}
	h := start(t, t.TempDir(), t.TempDir(), iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "j", Domains: []string{"j.example.com"}}})
	waitFor(t, "the first order", func() bool { return iss.count() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results := make(chan RenewResult, 2)
	go func() { results <- h.m.Renew(ctx, "j", false) }()
	go func() { results <- h.m.Renew(ctx, "j", true) }()
	waitFor(t, "both renewals to join", func() bool {
		h.m.mu.Lock()
		defer h.m.mu.Unlock()
		return len(h.m.certs["j"].wait.ordering) == 2
	})
	iss.gate <- struct{}{}
	for range 2 {
		if r := <-results; r.Err != "" || !r.Ordered || r.Serial == "" {
			t.Fatalf("renew during the order = %+v, want that order's outcome", r)
		}
	}
	if n := iss.count(); n != 1 {
		t.Fatalf("orders = %d, want 1: renewals asked for during an order join it", n)
	}
}

func TestManagerFallsBackToTheNewestValidVersion(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	store, _ := NewStore(certs, DefaultOwner)
	c1, k1 := iss.ca.issue(t, []string{"f.example.com"}, 90*24*time.Hour)
	first, _ := store.Write("f", c1, k1, false)
	c2, k2 := iss.ca.issue(t, []string{"f.example.com"}, 90*24*time.Hour)
	second, _ := store.Write("f", c2, k2, false)
	if err := os.Truncate(filepath.Join(certs, ".versions", "f", second.Version, FileFullchain), 10); err != nil {
		t.Fatal(err)
	}
	h := start(t, certs, st, iss, &fakeDeployer{})
	h.m.Update([]Want{{Name: "f", Domains: []string{"f.example.com"}}})
	waitFor(t, "valid", func() bool { return state(h.m, "f").State == StateValid })
	if s := state(h.m, "f"); s.Serial != first.Serial || iss.count() != 0 {
		t.Fatalf("after a damaged current version: serial %s, orders %d; want the older %s and no order", s.Serial, iss.count(), first.Serial)
	}
}

func TestManagerSaysWhenMoreDeploymentsAreComing(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour, gate: make(chan struct{})}
	dep := &fakeDeployer{}
	h := start(t, certs, st, iss, dep) // two orders at once
	h.m.Update([]Want{{Name: "a", Domains: []string{"a.example.com"}}, {Name: "b", Domains: []string{"b.example.com"}},
		{Name: "c", Domains: []string{"c.example.com"}}})
	// The CA answers one order at a time; each certificate is deployed
	// before the next answer.
	for i := 1; i <= 3; i++ {
		iss.gate <- struct{}{}
		waitFor(t, fmt.Sprintf("deployment %d", i), func() bool { _, n := dep.last(); return n == i })
	}
	dep.mu.Lock()
	defer dep.mu.Unlock()
	// The first: one order in flight and one waiting for a slot; the
	// second: the third in flight; the last: nothing more is coming.
	if !dep.seen[0].More || !dep.seen[1].More || dep.seen[2].More {
		t.Errorf("More = %v, %v, %v; want true, true, false", dep.seen[0].More, dep.seen[1].More, dep.seen[2].More)
	}
}

// A failure of edgecert's own configuration (a DNS provider refusing its
// credentials) waits 10 minutes, not one; a changed configuration is a new
// wish, ordered at once.
func TestConfigFailureWaitsLongerAndANewConfigRetriesAtOnce(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: time.Hour,
		fail: &OrderError{Err: errors.New("DNS provider: bad authentication"), Config: true}}
	h := start(t, certs, st, iss, &fakeDeployer{})
	want := []Want{{Name: "x", Domains: []string{"x.example.com"}, Challenge: ChallengeDNS, DNS: "rfc2136"}}
	h.m.Update(want)
	waitFor(t, "failing", func() bool { return state(h.m, "x").State == "failing" })
	if until := time.Until(state(h.m, "x").NextRetry); until < 8*time.Minute || until > 12*time.Minute {
		t.Fatalf("next retry in %v, want about 10 min", until)
	}
	h.stop()

	iss.mu.Lock()
	iss.fail = nil
	iss.mu.Unlock()
	store, _ := NewStore(certs, DefaultOwner)
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: st, MaxOrders: 2, Store: store, Issuer: iss,
		Deployer: &fakeDeployer{}, Log: h.m.log, DNSConfig: "fixed"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	m.Update(want)
	waitFor(t, "issued with the new configuration", func() bool { return state(m, "x").State == "valid" })
}

// unservedDeployer answers for certificates not in served as a proxy with
// no server for their names does (ErrUnserved), and counts its calls.
type unservedDeployer struct {
	mu     sync.Mutex
	served map[string]bool
	calls  map[string]int
}

func (u *unservedDeployer) Deploy(ctx context.Context, d Deployment) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls[d.Name]++
	if !u.served[d.Name] {
		return fmt.Errorf("%w: nginx has no server for %s: it presented a certificate for default.invalid", ErrUnserved, d.Domains[0])
	}
	return nil
}

func (u *unservedDeployer) count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[name]
}

// A certificate no proxy serves the names of is a hint, not a failure: no
// retries on the deploy backoff (an hour of clock brings one check), checked
// again at once when a proxy proves another certificate and on renew, one
// history event per hint, and proven when a server block comes.
func TestManagerUnservedIsAHintNotARetryLoop(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	iss := &fakeIssuer{t: t, ca: newTestCA(t), life: 90 * 24 * time.Hour}
	dep := &unservedDeployer{served: map[string]bool{"a": true}, calls: map[string]int{}}
	m := launch(t, t.TempDir(), t.TempDir(), iss, dep, clk).m
	u := Want{Name: "u", Domains: []string{"u.example.com"}}
	m.Update([]Want{u})
	waitFor(t, "u's hint", func() bool { return state(m, "u").Hint != "" })
	s := state(m, "u")
	if s.State != StateValid || s.DeployError != "" || s.Deployed || !strings.Contains(s.Hint, "no server for u.example.com") || kinds(s.History) != "issued,unserved" {
		t.Fatalf("u = state %s, deploy error %q, deployed %v, hint %q, history %s; want valid, a hint, one unserved event",
			s.State, s.DeployError, s.Deployed, s.Hint, kinds(s.History))
	}
	roundTrip := func() {
		m.poke()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.Renew(ctx, "nosuch", false)
		cancel()
	}
	// Most of an hour passes: the deploy backoff (15 s, 1 min, 5 min,
	// 15 min) would have retried four times; a hint waits.
	for range 5 {
		clk.set(clk.Now().Add(11 * time.Minute))
		roundTrip()
	}
	if n := dep.count("u"); n != 1 {
		t.Fatalf("u was deployed %d times in 55 minutes, want once", n)
	}
	// Another certificate is proven on the proxy: u is checked again.
	m.Update([]Want{u, {Name: "a", Domains: []string{"a.example.com"}}})
	waitFor(t, "a deployed and u checked again", func() bool {
		return state(m, "a").Deployed && dep.count("u") == 2 && state(m, "u").LastDeploy.Equal(clk.Now())
	})
	// renew u (not due): checked again, no order.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := m.Renew(ctx, "u", false)
	if res.Ordered || !strings.Contains(res.Err, "no server for u.example.com") || dep.count("u") != 3 {
		t.Errorf("renew u = %+v (deploys %d); want no order, the hint, a third check", res, dep.count("u"))
	}
	// An hour later with nothing else: one more check.
	clk.set(clk.Now().Add(61 * time.Minute))
	roundTrip()
	waitFor(t, "the hourly check, done", func() bool { return dep.count("u") == 4 && state(m, "u").LastDeploy.Equal(clk.Now()) })
	// The server block comes.
	dep.mu.Lock()
	dep.served["u"] = true
	dep.mu.Unlock()
	res = m.Renew(ctx, "u", false)
	s = state(m, "u")
	if res.Err != "" || !s.Deployed || s.Hint != "" || kinds(s.History) != "issued,unserved,reload_proven" || iss.count() != 2 {
		t.Errorf("after the server block: renew %+v, state %+v, history %s, orders %d; want proven, no hint, 2 orders (u and a)", res, s, kinds(s.History), iss.count())
	}
}
