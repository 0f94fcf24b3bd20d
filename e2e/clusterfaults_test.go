package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterFaults is the cluster's fault campaign: three hosts (each its
// own nginx, edgecert and volumes, each reaching a three-member etcd through
// a relay of its own that can cut it), one certificate, and round after
// round a forced renewal on a random host while a random fault strikes:
// a host SIGKILLed or stopped and started again, a host cut from etcd and
// mended, one etcd member stopped, two stopped (no quorum). Once, a host
// with the wrong secret is started beside them. After every round the
// faults end and the invariants are checked: every host converges to the
// same serial and proves it; no certificate the CA issued was lost (each is
// in some host's history); the CA issued no more certificates than
// renewals were asked for; the wrong-secret host wrote nothing. `make test`
// runs 30 faults; `make soak-cluster` 200 (EDGECERT_E2E_CLUSTER_FAULTS).
func TestClusterFaults(t *testing.T) {
	t.Parallel()
	faults := 30
	if v, err := strconv.Atoi(os.Getenv("EDGECERT_E2E_CLUSTER_FAULTS")); err == nil && v > 0 {
		faults = v
	}
	etcd := startEtcd(t, "clfault")
	pebble, err := startPebble("pebble-clfault")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	env := []string{"EDGECERT_FORCED_RENEWALS=0", "EDGECERT_RELOAD_DEBOUNCE=300ms"}
	var hosts []*stack
	var relays []*etcdRelay
	for i := range 3 {
		r := newEtcdRelay(t, etcd)
		relays = append(relays, r)
		hosts = append(hosts, clusterHostWith(t, "clfault", i+1, "pebble-clfault", etcd, func(s *stack) { s.alsoOn = nil },
			append(env, "EDGECERT_ETCD_ENDPOINTS="+r.endpoints())...))
	}
	const name, domain = "f", "f.clfault.test"
	hosts[0].point(domain)
	for _, h := range hosts {
		h.writeConf("10-f.conf", tlsServer(name, domain))
		h.startApp(name, map[string]string{"domains": domain, "name": name})
	}
	serial := waitAllServe(t, hosts, "pebble-clfault", name, domain, "")
	caLog := func() string { out, _ := docker("logs", pebble); return out }
	issuedAtCA := func() []string {
		var out []string
		for _, line := range strings.Split(caLog(), "\n") {
			if _, after, ok := strings.Cut(line, "Issued certificate serial "); ok {
				out = append(out, strings.Fields(after)[0])
			}
		}
		return out
	}
	known := map[string]bool{} // serials some host recorded (history or served)
	record := func() {
		for _, h := range hosts {
			c, _ := h.cert(name)
			known[c.Serial] = true
			for _, ev := range c.History {
				known[ev.Serial] = true
			}
		}
	}
	record()

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("cluster fault campaign: %d faults, seed %d", faults, seed)
	kinds := []string{"kill", "stop", "cut", "member", "quorum"}
	counts := map[string]int{}
	asked, lost := 1, 0 // the first certificate was asked for too
	wrongSecretAt := rng.IntN(faults)
	start := time.Now()
	for i := range faults {
		if i == wrongSecretAt {
			checkWrongSecret(t, etcd, pebble)
		}
		renewer := hosts[rng.IntN(len(hosts))]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		renew := exec.CommandContext(ctx, "docker", "exec", renewer.edgecert, "edgecert", "renew", "--force", name)
		if err := renew.Start(); err != nil {
			t.Fatal(err)
		}
		asked++
		time.Sleep(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
		kind := kinds[rng.IntN(len(kinds))]
		counts[kind]++
		victim := rng.IntN(len(hosts))
		heal := strike(t, kind, hosts[victim], relays[victim], etcd, rng)
		time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
		heal()
		_ = renew.Wait()
		cancel()
		serial = waitAllServeWithin(t, 4*time.Minute, hosts, "pebble-clfault", name, domain, "")
		record()
		for _, s := range issuedAtCA() {
			if !known[s] {
				lost++
				t.Errorf("fault %d (%s on %s): serial %s, issued by the CA, reached no host", i, kind, hosts[victim].name, s)
				known[s] = true // counted once
			}
		}
		if issued := len(issuedAtCA()); issued > asked {
			t.Fatalf("fault %d (%s): the CA issued %d certificates for %d renewals asked", i, kind, issued, asked)
		}
		for _, h := range hosts {
			c, _ := h.cert(name)
			if left := time.Until(c.NotAfter); left < 90*24*time.Hour/20 {
				t.Errorf("fault %d: %s serves a certificate with %s left", i, h.name, left)
			}
		}
	}
	issued := len(issuedAtCA())
	orders := newOrders(t, pebble)
	t.Logf("MEASURE cluster faults: %d faults (%v) in %s; renewals asked %d, CA orders %d, certificates issued %d, lost %d; final serial %s everywhere",
		faults, counts, time.Since(start).Round(time.Second), asked, orders, issued, lost, serial)
}

// strike applies one fault to host h (or to etcd) and returns what ends it.
func strike(t *testing.T, kind string, h *stack, relay *etcdRelay, etcd *etcdCluster, rng *rand.Rand) (heal func()) {
	t.Helper()
	must := func(args ...string) {
		if out, err := docker(args...); err != nil {
			t.Fatalf("docker %s: %s", strings.Join(args, " "), out)
		}
	}
	switch kind {
	case "kill":
		must("kill", "-s", "KILL", h.edgecert)
		return func() { must("start", h.edgecert); waitHealthy(t, h) }
	case "stop":
		must("stop", h.edgecert)
		return func() { must("start", h.edgecert); waitHealthy(t, h) }
	case "cut":
		relay.setCut(true)
		return func() { relay.setCut(false); waitHealthy(t, h) }
	case "member":
		m := etcd.names[rng.IntN(len(etcd.names))]
		must("stop", m)
		return func() { must("start", m); waitMembers(t, etcd) }
	case "quorum":
		a := rng.IntN(len(etcd.names))
		b := (a + 1 + rng.IntN(len(etcd.names)-1)) % len(etcd.names)
		must("stop", etcd.names[a], etcd.names[b])
		return func() { must("start", etcd.names[a], etcd.names[b]); waitMembers(t, etcd) }
	}
	t.Fatalf("no fault %q", kind)
	return nil
}

// waitHealthy waits until h's edgecert says it is healthy: in the cluster,
// following its engine.
func waitHealthy(t *testing.T, h *stack) {
	t.Helper()
	if err := waitUntil(2*time.Minute, func() error {
		if out, code := h.cli("health"); code != 0 {
			return fmt.Errorf("%s: %s", h.name, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func waitMembers(t *testing.T, etcd *etcdCluster) {
	t.Helper()
	for i := range etcd.names {
		etcd.waitHealthy(i)
	}
}

// checkWrongSecret starts a host with another secret beside the cluster:
// it must not join, must say why naming EDGECERT_CLUSTER_SECRET, and must
// write nothing to etcd.
func checkWrongSecret(t *testing.T, etcd *etcdCluster, pebble string) {
	t.Helper()
	prefix := "/e2e-" + runID + "-clfault/"
	before := etcd.dump(t, prefix)
	r := newEtcdRelay(t, etcd)
	w := clusterHostWith(t, "clfault", 9, "pebble-clfault", etcd, func(s *stack) { s.alsoOn = nil },
		"EDGECERT_ETCD_ENDPOINTS="+r.endpoints(), "EDGECERT_CLUSTER_SECRET=not-the-cluster-secret-at-all")
	if err := waitUntil(2*time.Minute, func() error {
		out, code := w.cli("health")
		if code == 0 || !strings.Contains(out, "EDGECERT_CLUSTER_SECRET does not match") {
			return fmt.Errorf("the wrong-secret host's health: exit %d: %s", code, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for k, v := range etcd.dump(t, prefix) {
		if strings.Contains(k, w.name) || (before[k] != v && strings.Contains(v, w.name)) {
			t.Errorf("the wrong-secret host wrote %s", k)
		}
	}
	if strings.Contains(w.logs(), "not-the-cluster-secret") {
		t.Error("the wrong secret is in the host's log")
	}
	docker("rm", "-f", w.edgecert, w.nginx)
	t.Logf("MEASURE cluster faults: the wrong-secret host stayed out and wrote nothing")
}
