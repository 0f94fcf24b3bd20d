package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// bounded is a test's context for one call that can block on etcd.
func bounded(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// issue makes a chain from ca for o (no cluster), and its leaf.
func issue(t *testing.T, ca *fakeCA, o acme.Order) (string, *x509.Certificate) {
	t.Helper()
	chain, _, err := ca.Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := leafOf(string(chain))
	if err != nil {
		t.Fatal(err)
	}
	return string(chain), leaf
}

func TestTakesRule(t *testing.T) {
	ca := &fakeCA{}
	o := acme.Order{Domains: []string{"a.test", "b.test"}, KeyType: "ec256", Profile: "classic"}
	oldChain, old := issue(t, ca, o)
	newChain, _ := issue(t, ca, o) // later NotAfter (fakeCA adds an hour per order)
	now := time.Now()
	stored := now.Add(-time.Minute)
	doc := func(chain string, mod func(*certDoc)) *certDoc {
		d := &certDoc{Domains: []string{"b.test", "a.test"}, KeyType: "ec256", Profile: "classic", CA: ca.Directory(), Chain: chain, At: stored}
		if mod != nil {
			mod(d)
		}
		return d
	}
	with := func(mod func(*acme.Order)) acme.Order {
		x := o
		mod(&x)
		return x
	}
	for _, tc := range []struct {
		desc string
		doc  *certDoc
		o    acme.Order
		want string // "" takes
	}{
		{desc: "nothing served here: any matching valid one", doc: doc(oldChain, nil), o: o},
		{desc: "newer than the one served", doc: doc(newChain, nil), o: with(func(x *acme.Order) { x.Current = old })},
		{desc: "the one served (no ARI: no replaces)", doc: doc(oldChain, nil), o: with(func(x *acme.Order) { x.Current = old }),
			want: "not newer than the one this host serves"},
		{desc: "the one replaced (replaces only)", doc: doc(oldChain, nil), o: with(func(x *acme.Order) { x.Replaces = old }),
			want: "not newer than the one this host serves"},
		{desc: "older than the one served", doc: doc(oldChain, nil), o: with(func(x *acme.Order) { x.Current, _ = leafOf(newChain) }),
			want: "not newer than the one this host serves"},
		{desc: "forced: stored before it was asked (the certificate rolled back from)", doc: doc(newChain, nil),
			o: with(func(x *acme.Order) { x.Current, x.Forced, x.Asked = old, true, now }), want: "stored before the forced renewal was asked for"},
		{desc: "forced: stored after it was asked (another host's forced order)", doc: doc(newChain, func(d *certDoc) { d.At = now.Add(time.Second) }),
			o: with(func(x *acme.Order) { x.Current, x.Forced, x.Asked = old, true, now })},
		{desc: "another CA directory", doc: doc(oldChain, func(d *certDoc) { d.CA = "https://staging.test/dir" }), o: o, want: "from another CA directory"},
		{desc: "another key type", doc: doc(oldChain, func(d *certDoc) { d.KeyType = "rsa2048" }), o: o, want: "stored for another wish"},
		{desc: "another profile", doc: doc(oldChain, func(d *certDoc) { d.Profile = "shortlived" }), o: o, want: "stored for another wish"},
		{desc: "other names", doc: doc(oldChain, func(d *certDoc) { d.Domains = []string{"a.test"} }), o: o, want: "stored for another wish"},
		{desc: "unreadable chain", doc: doc("junk", nil), o: o, want: "unreadable"},
		{desc: "expired", doc: doc(oldChain, nil), o: o, want: "expired"},
	} {
		at := now
		if tc.want == "expired" {
			at = old.NotAfter.Add(time.Second)
		}
		if got := takes(tc.doc, tc.o, ca.Directory(), at); got != tc.want {
			t.Errorf("%s: takes = %q, want %q", tc.desc, got, tc.want)
		}
	}
}

// Finding 1 of issue 19: with no ARI (no replaces), a due renewal took back
// the very certificate it was renewing, in a loop, with no order. Now each
// renewal orders once and gets a new serial.
func TestRenewalWithoutARIOrdersOnceEach(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{}
	a, b := member(t, e, "a", Config{}), member(t, e, "b", Config{})
	o := acme.Order{Domains: []string{"noari.test"}, KeyType: "ec256"}
	chain, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 5; round++ {
		cur, _ := leafOf(string(chain))
		due := o
		due.Current = cur // what the Manager sets; Replaces stays nil without ARI
		host := []*Cluster{a, b}[round%2]
		got, _, err := host.Issuer(ca).Obtain(bounded(t), due)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		leaf, _ := leafOf(string(got))
		if serialHex(leaf) == serialHex(cur) {
			t.Fatalf("round %d: the renewal returned the certificate it renews (serial %s)", round, serialHex(cur))
		}
		if n := ca.orders.Load(); n != int32(round+1) {
			t.Fatalf("round %d: %d orders, want %d (one per renewal)", round, n, round+1)
		}
		// The other host, still on cur, takes the renewed one: no order.
		other := []*Cluster{b, a}[round%2]
		took, _, err := other.Issuer(ca).Obtain(bounded(t), due)
		if err != nil || string(took) != string(got) || ca.orders.Load() != int32(round+1) {
			t.Fatalf("round %d: the other host: %v, same=%v, %d orders", round, err, string(took) == string(got), ca.orders.Load())
		}
		chain = got
	}
}

// A forced renewal after a rollback orders; it never puts back the
// certificate the operator rolled back from.
func TestForcedAfterRollbackOrders(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{}
	a := member(t, e, "a", Config{})
	o := acme.Order{Domains: []string{"rb.test"}, KeyType: "ec256"}
	first, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := leafOf(string(first))
	renew := o
	renew.Current = x
	bad, _, err := a.Issuer(ca).Obtain(bounded(t), renew)
	if err != nil || ca.orders.Load() != 2 {
		t.Fatalf("renewal: %v, %d orders", err, ca.orders.Load())
	}
	// Rolled back to x; then `renew --force`.
	forced := o
	forced.Current, forced.Forced, forced.Asked = x, true, time.Now()
	got, _, err := a.Issuer(ca).Obtain(bounded(t), forced)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) == string(bad) || ca.orders.Load() != 3 {
		t.Fatalf("forced after rollback: got the rolled-back-from certificate=%v, %d orders (want a new order)", string(got) == string(bad), ca.orders.Load())
	}
}

// A TakeOnly order (another host said it stored a newer one) never orders.
func TestTakeOnlyNeverOrders(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{}
	a := member(t, e, "a", Config{})
	o := acme.Order{Domains: []string{"take.test"}, KeyType: "ec256", TakeOnly: true}
	if _, _, err := a.Issuer(ca).Obtain(bounded(t), o); !errors.Is(err, acme.ErrNothingNewer) || ca.orders.Load() != 0 {
		t.Fatalf("take-only with nothing stored: %v, %d orders", err, ca.orders.Load())
	}
	o.TakeOnly = false
	chain, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := leafOf(string(chain))
	o.TakeOnly, o.Current = true, cur
	if _, _, err := a.Issuer(ca).Obtain(bounded(t), o); !errors.Is(err, acme.ErrNothingNewer) || ca.orders.Load() != 1 {
		t.Fatalf("take-only of the one served: %v, %d orders", err, ca.orders.Load())
	}
}

// Finding 2 of issue 19: hosts on different CA directories (a rolling move
// from staging to production) ordered against each other without end. Now
// they never see each other's certificates: one order each, no wake-ups.
func TestHostsOnOtherCAsNeverWakeEachOther(t *testing.T) {
	e := startEtcdServer(t)
	staging, production := &fakeCA{}, &otherCA{}
	var wokeA, wokeB atomic.Int32
	a := member(t, e, "a", Config{Directory: staging.Directory(), OnCert: func(StoredCert) { wokeA.Add(1) }})
	b := member(t, e, "b", Config{Directory: production.Directory(), OnCert: func(StoredCert) { wokeB.Add(1) }})
	w := []Wish{{Name: "move", Domains: []string{"move.test"}, KeyType: "ec256"}}
	for _, h := range []*Cluster{a, b} {
		if err := h.SetWishes(bounded(t), w); err != nil {
			t.Fatal(err)
		}
	}
	o := acme.Order{Domains: []string{"move.test"}, KeyType: "ec256"}
	if _, _, err := a.Issuer(staging).Obtain(bounded(t), o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Issuer(production).Obtain(bounded(t), o); err != nil {
		t.Fatal(err)
	}
	// Each host's own certificate marks the point by which the other's
	// watch has seen anything before it: a third store, by a host on the
	// production CA, must wake b and still not a.
	c := member(t, e, "c", Config{Directory: production.Directory()})
	cur, _ := leafOf(func() string { ch, _, _ := production.Obtain(bounded(t), o); return string(ch) }())
	renew := o
	renew.Current = cur
	if _, _, err := c.Issuer(production).Obtain(bounded(t), renew); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		if wokeB.Load() == 0 {
			return errors.New("b never heard of c's certificate from its own CA")
		}
		return nil
	})
	if n := wokeA.Load(); n != 0 {
		t.Errorf("a (staging) was woken %d times by production certificates", n)
	}
	if staging.orders.Load() != 1 {
		t.Errorf("%d staging orders, want 1", staging.orders.Load())
	}
	// b takes only from its own CA: take-only finds c's, no order.
	take := o
	take.TakeOnly = true
	if _, _, err := b.Issuer(production).Obtain(bounded(t), take); err != nil {
		t.Errorf("b taking c's production certificate: %v", err)
	}
	take.Current = cur
	if _, _, err := a.Issuer(staging).Obtain(bounded(t), take); !errors.Is(err, acme.ErrNothingNewer) {
		t.Errorf("a (staging) offered a production certificate: %v", err)
	}
}

// Finding 4 of issue 19: a lease lost after finalize threw the issued
// certificate away, and the next lock holder ordered again. Now the host
// keeps it, serves it, and stores it in the cluster when its session is
// back; the other host takes it, no second order.
func TestCertificateIssuedAsTheLeaseIsLostIsKept(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{delay: 3 * time.Second, finalized: true}
	a, b := member(t, e, "a", Config{}), member(t, e, "b", Config{})
	o := acme.Order{Domains: []string{"kept.test"}, KeyType: "ec256"}
	type answer struct {
		chain []byte
		err   error
	}
	done := make(chan answer, 1)
	go func() {
		chain, _, err := a.Issuer(ca).Obtain(bounded(t), o)
		done <- answer{chain, err}
	}()
	waitFor(t, 20*time.Second, func() error {
		if ca.orders.Load() == 0 {
			return errors.New("the order never reached the CA")
		}
		return nil
	})
	e.stop() // the lease is lost while the CA issues
	var got answer
	select {
	case got = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Obtain never returned after its lease was lost")
	}
	if got.err != nil || len(got.chain) == 0 {
		t.Fatalf("the certificate issued as the lease was lost: %v", got.err)
	}
	e.start()
	waitFor(t, 30*time.Second, func() error {
		for _, h := range []*Cluster{a, b} {
			if ok, why, _ := h.Reachable(); !ok {
				return errors.New(why)
			}
		}
		return nil
	})
	// b takes what a kept, once a has stored it: no second order.
	waitFor(t, 30*time.Second, func() error {
		take := o
		take.TakeOnly = true
		chain, _, err := b.Issuer(ca).Obtain(bounded(t), take)
		if err != nil {
			return err
		}
		if string(chain) != string(got.chain) {
			return errors.New("b took another certificate than the one a kept")
		}
		return nil
	})
	if n := ca.orders.Load(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
}

// Finding 6 of issue 19: two names for one certificate on one host both
// ordered (etcd's mutex is re-entrant on one session). One orders, the
// other takes it.
func TestTwoNamesOnOneHostOrderOnce(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{delay: 300 * time.Millisecond}
	a := member(t, e, "a", Config{})
	o := acme.Order{Domains: []string{"twice.test"}, KeyType: "ec256"}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := a.Issuer(ca).Obtain(bounded(t), o)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := ca.orders.Load(); n != 1 {
		t.Errorf("%d orders for one certificate under two names on one host, want 1", n)
	}
}

// Two live hosts with one EDGECERT_NODE: the second does not join.
func TestDuplicateNodeNameIsRefused(t *testing.T) {
	e := startEtcdServer(t)
	member(t, e, "a", Config{})
	twin, stop := running(t, Config{Endpoints: []string{e.client}, Node: "a", Prefix: "/test/"})
	defer stop()
	waitFor(t, 20*time.Second, func() error {
		if _, why, _ := twin.Reachable(); !strings.Contains(why, "another live host is named \"a\"") {
			return errors.New("the twin's state: " + why)
		}
		return nil
	})
	if ok, _, _ := twin.Reachable(); ok {
		t.Error("the twin joined")
	}
}

// A token withdrawn while this host was away from etcd is removed from
// its webroot when it reconnects (the watch it missed would have).
func TestStaleTokenRemovedAtReconnect(t *testing.T) {
	e := startEtcdServer(t)
	root := t.TempDir()
	b := member(t, e, "b", Config{Webroot: root})
	s, err := b.current()
	if err != nil {
		t.Fatal(err)
	}
	key := b.key("tokens", "gone-token")
	doc, _ := b.seal.sign(key, tokenDoc{Domain: "shop.test", KeyAuth: "gone-token.thumb", By: "a"})
	b.tokenPut(bounded(t), s, key, []byte(doc)) // served, as the watch would; never in etcd now
	file := filepath.Join(root, ".well-known", "acme-challenge", "gone-token")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the token was not served: %v", err)
	}
	if _, err := b.serveTokens(bounded(t), s); err != nil { // what a reconnection does
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a token withdrawn while away is still served: %v", err)
	}
}

// Proofs live on their host's lease: a host gone, its proofs go (they no
// longer pile up under the names of recreated containers); a host that
// rejoins publishes its own again.
func TestProofsLiveOnTheLease(t *testing.T) {
	e := startEtcdServer(t)
	a := member(t, e, "a", Config{})
	b, stopB := running(t, Config{Endpoints: []string{e.client}, Node: "b", Prefix: "/test/"})
	w := []Wish{{Name: "shop", Domains: []string{"shop.test"}, KeyType: "ec256"}}
	for _, h := range []*Cluster{a, b} {
		if err := h.SetWishes(bounded(t), w); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, func() error {
		if err := b.Proven(bounded(t), "shop", "0b"); err != nil {
			return err
		}
		ps, err := a.Proofs(bounded(t))
		if err != nil || len(ps["shop"]) != 1 || ps["shop"][0].Node != "b" {
			return fmt.Errorf("a sees %+v, %v", ps, err)
		}
		return nil
	})
	stopB()
	waitFor(t, 20*time.Second, func() error {
		ps, err := a.Proofs(bounded(t))
		if err != nil || len(ps["shop"]) != 0 {
			return fmt.Errorf("b's proof outlived b: %+v, %v", ps, err)
		}
		return nil
	})
	// Proven while etcd was away is published at the next session.
	if err := a.Proven(bounded(t), "shop", "0a"); err != nil {
		t.Fatal(err)
	}
	e.stop()
	waitFor(t, 30*time.Second, func() error {
		if ok, _, _ := a.Reachable(); ok {
			return errors.New("still reachable")
		}
		return nil
	})
	_ = a.Proven(bounded(t), "shop", "0c") // unreachable: kept
	e.start()
	waitFor(t, 30*time.Second, func() error {
		ps, err := a.Proofs(bounded(t))
		if err != nil || len(ps["shop"]) != 1 || ps["shop"][0].Serial != "0c" {
			return fmt.Errorf("a's proof after the reconnection: %+v, %v", ps, err)
		}
		return nil
	})
}

// A rollback on one host is the cluster's: the others take the rolled-back
// certificate (older) when told it is a rollback, never as an ordinary
// offer; a forced renewal after it orders anew.
func TestRollbackIsShared(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{}
	a, b := member(t, e, "a", Config{}), member(t, e, "b", Config{})
	o := acme.Order{Domains: []string{"rb.test"}, KeyType: "ec256"}
	v, vkey, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	vleaf, _ := leafOf(string(v))
	renew := o
	renew.Current = vleaf
	y, _, err := b.Issuer(ca).Obtain(bounded(t), renew)
	if err != nil || ca.orders.Load() != 2 {
		t.Fatalf("renewal: %v, %d orders", err, ca.orders.Load())
	}
	yleaf, _ := leafOf(string(y))
	// a rolls back to v.
	if err := a.Issuer(ca).PublishRollback(bounded(t), acme.SharedRollback{Name: "rb", Domains: o.Domains, KeyType: o.KeyType,
		Chain: v, Key: vkey, Serial: serialHex(vleaf), From: serialHex(yleaf), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	offer := o
	offer.TakeOnly, offer.Current = true, yleaf
	if _, _, err := b.Issuer(ca).Obtain(bounded(t), offer); !errors.Is(err, acme.ErrNothingNewer) {
		t.Errorf("an ordinary offer took the older, rolled-back certificate: %v", err)
	}
	offer.Rollback = true
	got, _, err := b.Issuer(ca).Obtain(bounded(t), offer)
	if err != nil || string(got) != string(v) {
		t.Fatalf("b taking the rollback: %v, the rolled-back one: %v", err, string(got) == string(v))
	}
	forced := o
	forced.Current, forced.Forced, forced.Asked = vleaf, true, time.Now()
	w, _, err := b.Issuer(ca).Obtain(bounded(t), forced)
	if err != nil || string(w) == string(y) || string(w) == string(v) || ca.orders.Load() != 3 {
		t.Fatalf("renew --force after the rollback: %v, %d orders (want a new order)", err, ca.orders.Load())
	}
	wleaf, _ := leafOf(string(w))
	offer.Current = vleaf
	if _, _, err := a.Issuer(ca).Obtain(bounded(t), offer); !errors.Is(err, acme.ErrNothingNewer) {
		t.Errorf("a rollback offer after the renewal: %v (want nothing to take: renewed since)", err)
	}
	offer.Rollback = false
	if got, _, err := a.Issuer(ca).Obtain(bounded(t), offer); err != nil || serialHex(wleaf) != serialHex(func() *x509.Certificate { l, _ := leafOf(string(got)); return l }()) {
		t.Errorf("a taking the renewal after the rollback: %v", err)
	}
}

// A wish this host makes after its session began (its containers listed
// after it joined, as at a restart) hears of the certificate the cluster
// already holds: the watch only tells of stores from its start on.
func TestNewWishHearsOfTheStoredCertificate(t *testing.T) {
	e := startEtcdServer(t)
	ca := &fakeCA{}
	a := member(t, e, "a", Config{})
	heard := make(chan StoredCert, 4)
	b := member(t, e, "b", Config{Directory: ca.Directory(), OnCert: func(sc StoredCert) { heard <- sc }})
	o := acme.Order{Domains: []string{"late.test"}, KeyType: "ec256"}
	chain, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := leafOf(string(chain))
	if err := b.SetWishes(bounded(t), []Wish{{Name: "late", Domains: o.Domains, KeyType: o.KeyType}}); err != nil {
		t.Fatal(err)
	}
	select {
	case sc := <-heard:
		if sc.Name != "late" || sc.Serial != serialHex(leaf) {
			t.Errorf("b heard %+v, want serial %s", sc, serialHex(leaf))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("b never heard of the certificate stored before it wished for it")
	}
}
