package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// mended, one etcd member stopped, two stopped (no quorum), the CA (Pebble
// behind a relay) cut (requests in flight fail, new ones are refused) or
// slowed for a while, mid-order or mid-download. Once, a host
// with the wrong secret is started beside them, and once a host on another
// CA directory that wants the same name. After every round the
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
	pebble, err := startPebble("pebble-clfault-ca")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	relay, relayIP := startACMERelay(t, "pebble-clfault", "pebble-clfault-ca", false)
	t.Cleanup(func() { docker("rm", "-f", relay) })
	ca := &caRelay{t: t, ip: relayIP}
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
	serial := waitAllServe(t, hosts, "pebble-clfault-ca", name, domain, "")
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
	kinds := []string{"kill", "stop", "cut", "member", "quorum", "ca-cut", "ca-slow"}
	counts := map[string]int{}
	asked, lost := 1, 0 // the first certificate was asked for too
	wrongSecretAt, otherCAAt := rng.IntN(faults), rng.IntN(faults)
	var slowest time.Duration // from the end of a fault to every host serving and proving one serial
	start := time.Now()
	for i := range faults {
		if i == wrongSecretAt {
			checkWrongSecret(t, etcd, pebble)
		}
		if i == otherCAAt {
			checkOtherCA(t, etcd, hosts, domain)
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
		heal := strike(t, kind, hosts[victim], relays[victim], etcd, ca, rng)
		time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
		heal()
		healed := time.Now()
		_ = renew.Wait()
		cancel()
		serial = waitAllServeWithin(t, 4*time.Minute, hosts, "pebble-clfault-ca", name, domain, "")
		slowest = max(slowest, time.Since(healed))
		record()
		for _, s := range issuedAtCA(pebble) {
			if !known[s] {
				lost++
				t.Errorf("fault %d (%s on %s): serial %s, issued by the CA, reached no host", i, kind, hosts[victim].name, s)
				known[s] = true // counted once
			}
		}
		if issued := len(issuedAtCA(pebble)); issued > asked {
			t.Fatalf("fault %d (%s): the CA issued %d certificates for %d renewals asked", i, kind, issued, asked)
		}
		for _, h := range hosts {
			c, _ := h.cert(name)
			if left := time.Until(c.NotAfter); left < 90*24*time.Hour/20 {
				t.Errorf("fault %d: %s serves a certificate with %s left", i, h.name, left)
			}
		}
	}
	issued := len(issuedAtCA(pebble))
	orders := newOrders(t, pebble)
	t.Logf("MEASURE cluster faults: %d faults (%v) in %s; renewals asked %d, CA orders %d, certificates issued %d, lost %d; slowest convergence after a fault ended %s; final serial %s everywhere",
		faults, counts, time.Since(start).Round(time.Second), asked, orders, issued, lost, slowest.Round(100*time.Millisecond), serial)
}

// strike applies one fault to host h (or to etcd) and returns what ends it.
func strike(t *testing.T, kind string, h *stack, relay *etcdRelay, etcd *etcdCluster, ca *caRelay, rng *rand.Rand) (heal func()) {
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
	case "ca-cut":
		ca.do(fmt.Sprintf("/cut?for=%dms", 500+rng.IntN(3500)))
		return func() {}
	case "ca-slow":
		ca.do(fmt.Sprintf("/latency?d=%dms", 200+rng.IntN(1300)))
		return func() { ca.do("/latency?d=0s") }
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
	w := clusterHostWith(t, "clfault", 9, "pebble-clfault", etcd, func(s *stack) { s.alsoOn, s.unhealthy = nil, true },
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

// TestClusterNoARI: a CA without ARI (Pebble behind a relay that removes
// renewalInfo from its directory) and 2-minute certificates: in cluster
// mode, each scheduled renewal (half the lifetime, with no ARI) makes one
// order, for EDGECERT_E2E_NOARI_MINUTES (10). Before the fix a renewal
// without `replaces` took back its own certificate from etcd in a loop.
func TestClusterNoARI(t *testing.T) {
	t.Parallel()
	minutes := 10
	if v, err := strconv.Atoi(os.Getenv("EDGECERT_E2E_NOARI_MINUTES")); err == nil && v > 0 {
		minutes = v
	}
	etcd := startEtcd(t, "clnoari")
	pebble, err := startPebble("pebble-noari-ca")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	relay, _ := startACMERelay(t, "pebble-noari", "pebble-noari-ca", true)
	t.Cleanup(func() { docker("rm", "-f", relay) })
	hosts := clusterHosts(t, "clnoari", "pebble-noari", etcd, 3)
	const name, domain = "n", "n.clnoari.test"
	hosts[0].point(domain)
	for _, h := range hosts {
		h.writeConf("10-n.conf", tlsServer(name, domain))
		h.startApp(name, map[string]string{"domains": domain, "name": name, "profile": "shortlived"})
	}
	serial := waitAllServe(t, hosts, "pebble-noari-ca", name, domain, "")
	if c, _ := hosts[0].cert(name); c.RenewSource == "ari" {
		t.Fatalf("the relay's CA offers ARI: %+v", c)
	}
	start := time.Now()
	roots := caRoots(t, "pebble-noari-ca")
	serials := map[string]bool{serial: true}
	for time.Since(start) < time.Duration(minutes)*time.Minute {
		for _, h := range hosts {
			leaf, err := h.verified(roots, domain)
			if err != nil {
				t.Errorf("%s after %s: %v", h.name, time.Since(start).Round(time.Second), err)
				continue
			}
			serials[serialOf(leaf)] = true
		}
		if n := newOrders(t, pebble); float64(n) > 2+time.Since(start).Seconds()/50 {
			t.Fatalf("%d orders in %s for 2-minute certificates renewed at half their lifetime: a renewal loop", n, time.Since(start).Round(time.Second))
		}
		time.Sleep(2 * time.Second)
	}
	elapsed := time.Since(start)
	orders := newOrders(t, pebble)
	if min := int(elapsed.Seconds()/60) - 2; orders < min {
		t.Errorf("%d orders in %s: renewals did not happen (want at least %d)", orders, elapsed.Round(time.Second), min)
	}
	final := waitAllServe(t, hosts, "pebble-noari-ca", name, domain, "")
	t.Logf("MEASURE cluster without ARI: %s, %d orders, %d serials seen served, final %s on every host",
		elapsed.Round(time.Second), orders, len(serials), final)
}

// startACMERelay runs testapp's ACME relay as alias, in front of the Pebble
// known as upstream (without ARI if noARI); it returns the container's name
// and its address (the fault control is on port 8081).
func startACMERelay(t *testing.T, alias, upstream string, noARI bool) (string, string) {
	t.Helper()
	name := "e2e-" + runID + "-" + alias
	ip := newIP()
	if out, err := docker("run", "-d", "--name", name, "--label", "edgecert-e2e="+runID, "--network", netName, "--ip", ip,
		"--network-alias", alias,
		"-v", filepath.Join(hostDir, "pebble-tls-cert.pem")+":/cert.pem:ro",
		"-v", filepath.Join(hostDir, "pebble-tls-key.pem")+":/key.pem:ro",
		"edgecert-testapp:e2e", "/testapp", "acme-relay", "https://"+upstream+":14000", "/cert.pem", "/key.pem", map[bool]string{true: "no-ari", false: "ari"}[noARI]); err != nil {
		t.Fatalf("start the ACME relay: %s", out)
	}
	if err := waitUntil(30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", ip+":14000", time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	return name, ip
}

// caRelay tells the ACME relay in front of the CA which fault to make.
type caRelay struct {
	t  *testing.T
	ip string
}

func (c *caRelay) do(path string) {
	c.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + c.ip + ":8081" + path)
	if err != nil {
		c.t.Fatalf("the CA relay: %v", err)
	}
	resp.Body.Close()
}

// checkOtherCA starts a host on another CA directory (its own Pebble) that
// wants the cluster's name, as during a move from staging to production:
// it orders once from its CA, and the cluster's hosts are never woken by
// its certificate nor order because of it.
func checkOtherCA(t *testing.T, etcd *etcdCluster, hosts []*stack, domain string) {
	t.Helper()
	other, err := startPebble("pebble-clfault-other")
	if err != nil {
		t.Fatal(err)
	}
	defer docker("rm", "-f", other)
	r := newEtcdRelay(t, etcd)
	o := clusterHostWith(t, "clfault", 8, "pebble-clfault-other", etcd, func(s *stack) { s.alsoOn = nil },
		"EDGECERT_ETCD_ENDPOINTS="+r.endpoints())
	defer docker("rm", "-f", o.edgecert, o.nginx)
	o.writeConf("10-f.conf", tlsServer("f", domain))
	o.startApp("f", map[string]string{"domains": domain, "name": "f"})
	if err := waitUntil(2*time.Minute, func() error {
		if c, _ := o.cert("f"); !c.Deployed {
			return fmt.Errorf("the host on the other CA: %+v", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := newOrders(t, other); n != 1 {
		t.Errorf("%d orders at the other CA, want 1", n)
	}
	// Neither side is offered the other's certificate (the log line names
	// the host that stored it).
	for _, h := range hosts {
		for _, line := range strings.Split(h.logs(), "\n") {
			if strings.Contains(line, "the issuer has a newer certificate") && strings.Contains(line, "by="+o.name) {
				t.Errorf("%s was offered the other CA's certificate: %s", h.name, line)
			}
		}
	}
	if strings.Contains(o.logs(), "the issuer has a newer certificate") {
		t.Errorf("the host on the other CA was offered the cluster's certificate")
	}
	t.Logf("MEASURE cluster faults: a host on another CA ordered once there; the cluster was not woken")
}
