package acme

import (
	"crypto/x509"
	"testing"
	"time"
)

// onDisk is a current certificate for domains, issued at t0 for life.
func onDisk(life time.Duration, keyType string, domains ...string) *Info {
	return &Info{Domains: domains, NotBefore: t0, NotAfter: t0.Add(life), KeyType: keyType, Fingerprint: "fp", Serial: "01",
		Leaf: &x509.Certificate{}}
}

func TestWish(t *testing.T) {
	d := defaults{KeyType: "ec256", Profile: "classic", UnusedGrace: 7 * day, Directory: "https://ca/dir"}
	tests := []struct {
		desc   string
		e      entry
		at     time.Duration
		active bool
		want   Order
	}{
		{desc: "wanted: defaults fill the gaps", e: entry{want: &Want{Domains: []string{"a.test"}}}, active: true,
			want: Order{Domains: []string{"a.test"}, KeyType: "ec256", Profile: "classic"}},
		{desc: "wanted: the label's options win", e: entry{want: &Want{Domains: []string{"a.test"}, KeyType: "rsa2048", Profile: "shortlived", Email: "x@a.test"}},
			active: true, want: Order{Domains: []string{"a.test"}, KeyType: "rsa2048", Profile: "shortlived", Email: "x@a.test"}},
		{desc: "unused in its grace: renewed as it was issued",
			e:  entry{disk: onDisk(90*day, "ec384", "u.test"), st: persisted{UnusedSince: t0, Issued: &issuedSpec{KeyType: "ec384", Profile: "tlsserver"}}},
			at: 6 * day, active: true, want: Order{Domains: []string{"u.test"}, KeyType: "ec384", Profile: "tlsserver"}},
		{desc: "unused past its grace: nothing", e: entry{disk: onDisk(90*day, "ec256", "u.test"), st: persisted{UnusedSince: t0}}, at: 8 * day},
		{desc: "a placeholder nobody wants: nothing", e: entry{disk: &Info{Placeholder: true}, st: persisted{UnusedSince: t0}}, at: day},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, active := wish(&tc.e, d, t0.Add(tc.at))
			if active != tc.active || specKey(got) != specKey(tc.want) || got.Email != tc.want.Email {
				t.Errorf("wish = %+v, %v; want %+v, %v", got, active, tc.want, tc.active)
			}
		})
	}
}

func TestOrderNow(t *testing.T) {
	const dir = "https://ca/dir"
	o := Order{Domains: []string{"a.test", "www.a.test"}, KeyType: "ec256"}
	valid := func() *Info { return onDisk(90*day, "ec256", "www.a.test", "a.test") }
	tests := []struct {
		desc      string
		e         entry
		at        time.Duration
		order     bool
		reason    string
		wakeAfter time.Duration // 0: no wake-up
	}{
		{desc: "nothing on the volume", e: entry{}, order: true, reason: "new certificate"},
		{desc: "a placeholder", e: entry{disk: &Info{Placeholder: true}}, order: true, reason: "new certificate"},
		{desc: "valid, same names in another order: sleep until due", e: entry{disk: valid()}, at: day, wakeAfter: 60 * day},
		{desc: "due by the ratio", e: entry{disk: valid()}, at: 61 * day, order: true, reason: "due (ratio)"},
		{desc: "due by ARI", e: entry{disk: valid(), st: persisted{ARI: &ARIWindow{Chosen: t0.Add(40 * day)}}}, at: 41 * day, order: true, reason: "due (ari)"},
		{desc: "a name was added", e: entry{disk: onDisk(90*day, "ec256", "a.test")}, order: true, reason: "domains changed"},
		{desc: "another CA", e: entry{disk: valid(), st: persisted{Directory: "https://other/dir"}}, order: true, reason: "CA directory changed"},
		{desc: "another key type", e: entry{disk: onDisk(90*day, "rsa2048", "a.test", "www.a.test")}, order: true, reason: "key type changed"},
		{desc: "another profile", e: entry{disk: valid(), st: persisted{Issued: &issuedSpec{KeyType: "ec256", Profile: "shortlived"}}}, order: true, reason: "profile changed"},
		{desc: "forced, though valid", e: entry{disk: valid(), force: true}, at: day, order: true, reason: "forced"},
		{desc: "failed: wait for the retry", e: entry{st: persisted{RetryAt: t0.Add(time.Hour), FailedSpec: specKey(o)}}, wakeAfter: time.Hour},
		{desc: "failed, retry time passed", e: entry{st: persisted{RetryAt: t0.Add(time.Hour), FailedSpec: specKey(o)}}, at: 2 * time.Hour, order: true, reason: "new certificate"},
		{desc: "failed, but the wish changed: at once", e: entry{st: persisted{RetryAt: t0.Add(time.Hour), FailedSpec: "other|ec256|"}}, order: true, reason: "new certificate"},
		{desc: "rate limited: even a changed wish waits for the CA's Retry-After",
			e: entry{st: persisted{RetryAt: t0.Add(time.Hour), LimitedUntil: t0.Add(time.Hour), FailedSpec: "other|ec256|"}}, wakeAfter: time.Hour},
		{desc: "a changed wish after an order for an earlier change: a minute after it",
			e: entry{disk: onDisk(90*day, "ec256", "a.test"), st: persisted{WishOrders: []time.Time{t0.Add(-30 * time.Second)}}}, wakeAfter: 30 * time.Second},
		{desc: "a third change within a day: ten minutes after the last",
			e: entry{disk: onDisk(90*day, "ec256", "a.test"), st: persisted{WishOrders: []time.Time{t0.Add(-2 * time.Hour), t0.Add(-time.Minute)}}}, wakeAfter: 9 * time.Minute},
		{desc: "changes more than a day apart: at once",
			e: entry{disk: onDisk(90*day, "ec256", "a.test"), st: persisted{WishOrders: []time.Time{t0.Add(-25 * time.Hour)}}}, order: true, reason: "domains changed"},
		{desc: "rate limited, then the time has come", e: entry{st: persisted{LimitedUntil: t0.Add(time.Hour)}}, at: 2 * time.Hour, order: true, reason: "new certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			order, reason, wake := orderNow(&tc.e, o, dir, t0.Add(tc.at))
			var wakeAfter time.Duration
			if !wake.IsZero() {
				wakeAfter = wake.Sub(t0)
			}
			if order != tc.order || reason != tc.reason || wakeAfter != tc.wakeAfter {
				t.Errorf("orderNow = %v %q wake %v; want %v %q wake %v", order, reason, wakeAfter, tc.order, tc.reason, tc.wakeAfter)
			}
		})
	}
}

func TestReplaces(t *testing.T) {
	const dir = "https://ca/dir"
	o := Order{Domains: []string{"a.test"}}
	ari := &ARIWindow{Chosen: t0}
	tests := []struct {
		desc string
		e    entry
		o    Order
		want bool
	}{
		{desc: "same CA, ARI answered, a shared name", e: entry{disk: onDisk(90*day, "", "a.test"), st: persisted{ARI: ari, Directory: dir}}, o: o, want: true},
		{desc: "no ARI answer", e: entry{disk: onDisk(90*day, "", "a.test"), st: persisted{Directory: dir}}, o: o},
		{desc: "another CA", e: entry{disk: onDisk(90*day, "", "a.test"), st: persisted{ARI: ari, Directory: "https://other"}}, o: o},
		{desc: "no shared name", e: entry{disk: onDisk(90*day, "", "b.test"), st: persisted{ARI: ari}}, o: o},
		{desc: "a placeholder", e: entry{disk: &Info{Placeholder: true, Leaf: &x509.Certificate{}}, st: persisted{ARI: ari}}, o: o},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := replaces(&tc.e, tc.o, dir) != nil; got != tc.want {
				t.Errorf("replaces = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWaitersFollowTheWork(t *testing.T) {
	var w waiters
	a, b, c := make(chan RenewResult, 1), make(chan RenewResult, 1), make(chan RenewResult, 1)
	w.awaitOrder(a)
	w.orderStarted()
	w.awaitOrder(b) // asked during the order: waits for the next one
	w.orderWritten("fp1")
	if !w.awaitsProof("fp1") || w.awaitsProof("fp2") || w.awaitsProof("") {
		t.Fatalf("awaitsProof wrong after orderWritten(fp1): %+v", w)
	}
	w.proven(RenewResult{Name: "x", Message: "proven"})
	if r := <-a; r.Message != "proven" {
		t.Errorf("the order's waiter got %+v", r)
	}
	if len(b) != 0 || len(w.toStart) != 1 {
		t.Fatalf("the later request was answered or lost: %+v", w)
	}
	w.orderStarted()
	w.orderFailed(RenewResult{Err: "refused"})
	if r := <-b; r.Err != "refused" {
		t.Errorf("failed order's waiter got %+v", r)
	}
	w.awaitReload(c, "fp1")
	if !w.noOrder {
		t.Errorf("a reload retried without an order is not marked so")
	}
	w.all(RenewResult{Err: "shutting down"})
	if r := <-c; r.Err != "shutting down" || w.awaitsProof("fp1") {
		t.Errorf("shutdown: %+v, waiters %+v", r, w)
	}
}

func TestDescribeStates(t *testing.T) {
	d := defaults{KeyType: "ec256", UnusedGrace: 7 * day}
	want := &Want{Domains: []string{"a.test"}}
	tests := []struct {
		desc string
		e    entry
		hold string
		want State
	}{
		{desc: "nothing yet", e: entry{want: want}, want: StatePending},
		{desc: "placeholder", e: entry{want: want, disk: &Info{Placeholder: true}}, want: StatePlaceholder},
		{desc: "valid", e: entry{want: want, disk: onDisk(90*day, "ec256", "a.test")}, want: StateValid},
		{desc: "renewing", e: entry{want: want, disk: onDisk(90*day, "ec256", "a.test"), ordering: true}, want: StateRenewing},
		{desc: "order failed", e: entry{want: want, st: persisted{LastError: "x"}}, want: StateFailing},
		{desc: "reload failed", e: entry{want: want, disk: onDisk(90*day, "ec256", "a.test"), deployErr: "x"}, want: StateFailing},
		{desc: "unused", e: entry{disk: onDisk(90*day, "ec256", "a.test")}, want: StateUnused},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if s := describe(&tc.e, d, tc.hold, t0.Add(day)); s.State != tc.want {
				t.Errorf("state = %s, want %s", s.State, tc.want)
			}
		})
	}
	held := describe(&entry{want: want}, d, "no proxy container is running (nginx)", t0)
	if held.Waiting == "" {
		t.Errorf("a due certificate under a hold does not say why it waits")
	}
}

func TestBoundElsewhere(t *testing.T) {
	d := defaults{UnusedGrace: 7 * day}
	cert := func() *Info { return onDisk(90*day, "ec256", "shop.test", "www.shop.test") }
	tests := []struct {
		desc  string
		e     entry
		w     []string
		bound bool
	}{
		{desc: "nothing on the volume", e: entry{name: "shop"}, w: []string{"x.test"}},
		{desc: "a placeholder", e: entry{name: "shop", disk: &Info{Placeholder: true, Domains: []string{"shop.test"}}}, w: []string{"x.test"}},
		{desc: "the owner adds a name", e: entry{name: "shop", disk: cert()}, w: []string{"shop.test", "api.shop.test"}},
		{desc: "the owner drops a name", e: entry{name: "shop", disk: cert()}, w: []string{"www.shop.test"}},
		{desc: "other names while in use", e: entry{name: "shop", disk: cert(), want: &Want{}}, w: []string{"x.test"}, bound: true},
		{desc: "other names in the unused grace", e: entry{name: "shop", disk: cert(), st: persisted{UnusedSince: t0}}, w: []string{"x.test"}, bound: true},
		{desc: "other names past the grace", e: entry{name: "shop", disk: cert(), st: persisted{UnusedSince: t0.Add(-8 * day)}}, w: []string{"x.test"}},
		{desc: "other names once released", e: entry{name: "shop", disk: cert(), want: &Want{}, st: persisted{Released: true}}, w: []string{"x.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			why := boundElsewhere(&tc.e, Want{Name: "shop", Domains: tc.w}, d, t0.Add(time.Hour))
			if (why != "") != tc.bound {
				t.Errorf("boundElsewhere = %q, want bound=%v", why, tc.bound)
			}
		})
	}
}

func TestOrderStuck(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	d := defaults{OrderTimeout: 15 * time.Minute}
	for _, tc := range []struct {
		desc  string
		e     entry
		d     defaults
		stuck bool
	}{
		{desc: "not ordering", e: entry{orderStarted: now.Add(-time.Hour)}, d: d},
		{desc: "within its deadline", e: entry{ordering: true, orderStarted: now.Add(-10 * time.Minute)}, d: d},
		{desc: "finishing after finalize, past the deadline", e: entry{ordering: true, orderStarted: now.Add(-17 * time.Minute)}, d: d},
		{desc: "past the deadline and the finish", e: entry{ordering: true, orderStarted: now.Add(-19 * time.Minute)}, d: d, stuck: true},
		{desc: "no deadline configured", e: entry{ordering: true, orderStarted: now.Add(-24 * time.Hour)}},
	} {
		if got := orderStuck(&tc.e, tc.d, now); (got != "") != tc.stuck {
			t.Errorf("%s: orderStuck = %q, want stuck %v", tc.desc, got, tc.stuck)
		}
	}
}
