package cluster

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgecert/edgecert/acme"
)

// Finding 3 of issue 19: a host with another secret joined, wrote, and
// stopped ordering quietly. Now it refuses to join, writes nothing, and
// says why, naming EDGECERT_CLUSTER_SECRET.
func TestWrongSecretIsRefusedAndWritesNothing(t *testing.T) {
	e := startEtcdServer(t)
	a := member(t, e, "a", Config{})
	b, stop := running(t, Config{Endpoints: []string{e.client}, Node: "b", Prefix: "/test/", Secret: []byte("another secret, long enough")})
	defer stop()
	waitFor(t, 20*time.Second, func() error {
		if _, why, _ := b.Reachable(); !strings.Contains(why, "EDGECERT_CLUSTER_SECRET does not match") {
			return errors.New("b's state: " + why)
		}
		return nil
	})
	ok, why, _ := b.Reachable()
	if ok || !strings.Contains(why, "writes nothing") || strings.Contains(why, "another secret") {
		t.Errorf("b: reachable %v, %q", ok, why)
	}
	// Nothing of b's in etcd, and the key check as a made it.
	resp, err := a.cli.Get(bounded(t), "/test/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if strings.HasSuffix(k, "/b") || strings.Contains(k, "/b/") {
			t.Errorf("the wrong-secret host wrote %s", k)
		}
		if k == a.key("keycheck") && kv.ModRevision != kv.CreateRevision {
			t.Errorf("the key check was rewritten (created at %d, modified at %d)", kv.CreateRevision, kv.ModRevision)
		}
	}
	ca := &fakeCA{}
	if _, _, err := b.Issuer(ca).Obtain(bounded(t), acme.Order{Domains: []string{"x.test"}, KeyType: "ec256"}); err == nil || ca.orders.Load() != 0 {
		t.Errorf("the wrong-secret host ordering: %v, %d orders", err, ca.orders.Load())
	}
}

// A document written without the secret (anybody with write access to
// etcd) is ignored: never taken, never honoured.
func TestForgedDocumentsAreIgnored(t *testing.T) {
	e := startEtcdServer(t)
	a := member(t, e, "a", Config{})
	ca := &fakeCA{}
	o := acme.Order{Domains: []string{"forged.test"}, KeyType: "ec256"}
	id := ID(o.Domains, o.KeyType, o.Profile, ca.Directory())
	chain, _ := issue(t, &fakeCA{}, o)
	forged, _ := json.Marshal(certDoc{Domains: o.Domains, KeyType: o.KeyType, CA: ca.Directory(), Chain: chain, Key: []byte("x"), By: "mallory", At: time.Now()})
	retry, _ := json.Marshal(retryDoc{Failures: 4, NotBefore: time.Now().Add(24 * time.Hour), Err: "forged", By: "mallory"})
	if _, err := a.cli.Put(bounded(t), a.key("certs", id), string(forged)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Put(bounded(t), a.key("retry", id), string(retry)); err != nil {
		t.Fatal(err)
	}
	got, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil || string(got) == chain || ca.orders.Load() != 1 {
		t.Fatalf("with a forged certificate and retry schedule in etcd: %v, took the forged one=%v, %d orders", err, string(got) == chain, ca.orders.Load())
	}
}

// EDGECERT_CLUSTER_SECRET_PREVIOUS rotates the cluster: what the old secret
// sealed is re-sealed, a host with only the new secret takes it without an
// order, and a host with only the old one is refused.
func TestSecretRotation(t *testing.T) {
	e := startEtcdServer(t)
	oldSecret, newSecret := []byte("the old cluster secret, long"), []byte("the new cluster secret, long")
	ca := &fakeCA{}
	o := acme.Order{Domains: []string{"rotate.test"}, KeyType: "ec256"}
	a, stopA := running(t, Config{Endpoints: []string{e.client}, Node: "a", Prefix: "/test/", Secret: oldSecret})
	waitFor(t, 20*time.Second, func() error {
		if ok, why, _ := a.Reachable(); !ok {
			return errors.New(why)
		}
		return nil
	})
	chain, _, err := a.Issuer(ca).Obtain(bounded(t), o)
	if err != nil {
		t.Fatal(err)
	}
	stopA()
	r, stopR := running(t, Config{Endpoints: []string{e.client}, Node: "r", Prefix: "/test/", Secret: newSecret, PreviousSecret: oldSecret})
	defer stopR()
	waitFor(t, 20*time.Second, func() error {
		if ok, why, _ := r.Reachable(); !ok {
			return errors.New(why)
		}
		return nil
	})
	n, stopN := running(t, Config{Endpoints: []string{e.client}, Node: "n", Prefix: "/test/", Secret: newSecret})
	defer stopN()
	waitFor(t, 20*time.Second, func() error {
		if ok, why, _ := n.Reachable(); !ok {
			return errors.New(why)
		}
		return nil
	})
	take := o
	take.TakeOnly = true
	got, _, err := n.Issuer(ca).Obtain(bounded(t), take)
	if err != nil || string(got) != string(chain) || ca.orders.Load() != 1 {
		t.Fatalf("the new-secret host after the rotation: %v, same=%v, %d orders", err, string(got) == string(chain), ca.orders.Load())
	}
	old, stopOld := running(t, Config{Endpoints: []string{e.client}, Node: "old", Prefix: "/test/", Secret: oldSecret})
	defer stopOld()
	waitFor(t, 20*time.Second, func() error {
		if _, why, _ := old.Reachable(); !strings.Contains(why, "EDGECERT_CLUSTER_SECRET does not match") {
			return errors.New("the old-secret host's state: " + why)
		}
		return nil
	})
}
