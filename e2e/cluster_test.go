package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cluster mode: three hosts on one etcd. Each "host" is its own nginx,
// edgecert and volumes, seeing only its own containers through its own
// label prefix, as separate engines would.

// etcdCluster is a three-member etcd on a network of its own (so that a
// host can be cut from etcd alone), from the edgecert-etcd:e2e image (the
// server built from etcd's module source). Members and clients find each
// other by container name.
type etcdCluster struct {
	t       *testing.T
	network string
	names   []string
}

func startEtcd(t *testing.T, tag string) *etcdCluster {
	t.Helper()
	e := &etcdCluster{t: t, network: "e2e-" + runID + "-" + tag + "-etcdnet"}
	if out, err := docker("network", "create", "--label", "edgecert-e2e="+runID, e.network); err != nil {
		t.Fatalf("create the etcd network: %s", out)
	}
	var initial []string
	for i := range 3 {
		e.names = append(e.names, fmt.Sprintf("e2e-%s-%s-etcd%d", runID, tag, i+1))
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", e.names[i], e.names[i]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range e.names {
				out, _ := docker("logs", "--tail", "20", n)
				t.Logf("--- last logs of %s:\n%s", n, out)
			}
		}
		docker(append([]string{"rm", "-f"}, e.names...)...)
		// Registered before any host's: runs after their containers are gone.
		docker("network", "rm", e.network)
	})
	for _, n := range e.names {
		if out, err := docker("run", "-d", "--name", n, "--label", "edgecert-e2e="+runID, "--network", e.network,
			"edgecert-etcd:e2e", "--name", n, "--data-dir", "/var/lib/etcd/data",
			"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://"+n+":2379",
			"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://"+n+":2380",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", runID+"-"+tag, "--log-level", "error"); err != nil {
			t.Fatalf("start etcd: %s", out)
		}
	}
	for i := range e.names {
		e.waitHealthy(i)
	}
	return e
}

// endpoints is EDGECERT_ETCD_ENDPOINTS for this cluster.
func (e *etcdCluster) endpoints() string {
	var eps []string
	for _, n := range e.names {
		eps = append(eps, "http://"+n+":2379")
	}
	return strings.Join(eps, ",")
}

// ip is member i's address, for the test's own health checks.
func (e *etcdCluster) ip(i int) string {
	out, _ := docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", e.names[i])
	return strings.TrimSpace(out)
}

// waitHealthy waits until member i says it is healthy (it has a leader).
func (e *etcdCluster) waitHealthy(i int) {
	e.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	if err := waitUntil(60*time.Second, func() error {
		resp, err := client.Get("http://" + e.ip(i) + ":2379/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var h struct{ Health string }
		if json.Unmarshal(b, &h) != nil || h.Health != "true" {
			return fmt.Errorf("etcd member %d: %s", i+1, b)
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// clusterHosts starts n hosts of one cluster: nginx and edgecert each,
// ordering from the Pebble known as pebble, with one ACME contact.
func clusterHosts(t *testing.T, tag, pebble string, etcd *etcdCluster, n int, env ...string) []*stack {
	t.Helper()
	var hosts []*stack
	for i := range n {
		hosts = append(hosts, clusterHost(t, tag, i+1, pebble, etcd, env...))
	}
	return hosts
}

func clusterHost(t *testing.T, tag string, i int, pebble string, etcd *etcdCluster, env ...string) *stack {
	t.Helper()
	return clusterHostWith(t, tag, i, pebble, etcd, nil, env...)
}

// clusterHostWith is clusterHost with prepare run on the stack before its
// nginx starts.
func clusterHostWith(t *testing.T, tag string, i int, pebble string, etcd *etcdCluster, prepare func(*stack), env ...string) *stack {
	t.Helper()
	s := newStack(t, fmt.Sprintf("%s%d", tag, i))
	s.pebble = pebble
	s.alsoOn = []string{etcd.network}
	if prepare != nil {
		prepare(s)
	}
	s.startNginx()
	s.startEdgecert(append([]string{"EDGECERT_ACME_EMAIL=ops@" + tag + ".test", "EDGECERT_ETCD_ENDPOINTS=" + etcd.endpoints(),
		"EDGECERT_CLUSTER_SECRET=e2e-cluster-secret-0123456789", "EDGECERT_NODE=" + s.name, "EDGECERT_CLUSTER_TTL=3s",
		"EDGECERT_ETCD_PREFIX=/e2e-" + runID + "-" + tag + "/"}, env...)...)
	return s
}

// clusterStatus is the cluster part of status --json.
type clusterStatus struct {
	Cluster *struct {
		Node      string `json:"node"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"cluster"`
	Certificates []struct {
		Name   string `json:"name"`
		Serial string `json:"serial"`
		Hosts  []struct {
			Node   string `json:"node"`
			Serial string `json:"serial"`
			Alive  bool   `json:"alive"`
		} `json:"hosts"`
	} `json:"certificates"`
}

func (s *stack) clusterStatus() clusterStatus {
	s.t.Helper()
	_, out, _ := s.cliSplit("status", "--json")
	var doc clusterStatus
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		s.t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return doc
}

// proofs are the serials each host proved for cert name, as host h's
// status shows them.
func (s *stack) proofs(name string) map[string]string {
	out := map[string]string{}
	for _, c := range s.clusterStatus().Certificates {
		if c.Name == name {
			for _, h := range c.Hosts {
				out[h.Node] = h.Serial
			}
		}
	}
	return out
}

// waitAllServe waits until every host's nginx serves domain with one
// certificate from the CA, each host's status says it proved it, and
// status on each host shows every host's proof of that serial.
func waitAllServe(t *testing.T, hosts []*stack, pebble, name, domain string, not string) string {
	t.Helper()
	return waitAllServeWithin(t, 90*time.Second, hosts, pebble, name, domain, not)
}

// waitAllServeWithin is waitAllServe with its own deadline.
func waitAllServeWithin(t *testing.T, within time.Duration, hosts []*stack, pebble, name, domain string, not string) string {
	t.Helper()
	var serial string
	if err := waitUntil(within, func() error {
		roots := caRoots(t, pebble)
		serial = ""
		for _, h := range hosts {
			leaf, err := h.verified(roots, domain)
			if err != nil {
				return fmt.Errorf("%s: %w", h.name, err)
			}
			got := serialOf(leaf)
			if got == not {
				return fmt.Errorf("%s still serves %s", h.name, not)
			}
			if serial != "" && got != serial {
				return fmt.Errorf("%s serves %s, another host %s", h.name, got, serial)
			}
			serial = got
		}
		for _, h := range hosts {
			p := h.proofs(name)
			for _, o := range hosts {
				if p[o.name] != serial {
					return fmt.Errorf("status on %s: %s proved %q, want %s", h.name, o.name, p[o.name], serial)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return serial
}

// TestClusterOneOrder: three hosts want one certificate; the CA orders it
// once, validated through a host that did not order it; every host serves
// it and proves it; a forced renewal orders once more; a restart of every
// edgecert orders nothing.
func TestClusterOneOrder(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t, "clone")
	pebble, err := startPebble("pebble-clone")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	hosts := clusterHosts(t, "clone", "pebble-clone", etcd, 3)
	const domain = "shop.clone.test"
	for _, h := range hosts {
		h.writeConf("10-shop.conf", tlsServer("shop", domain))
	}
	// The CA is sent to the third host; the first orders (only it wants the
	// name yet): the token must reach the third.
	hosts[2].point(domain)
	hosts[0].startApp("shop", map[string]string{"domains": domain, "name": "shop"})
	if err := waitUntil(60*time.Second, func() error {
		if c, ok := hosts[0].cert("shop"); !ok || !c.Deployed {
			return fmt.Errorf("host 1: %+v", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := newOrders(t, pebble); n != 1 {
		t.Fatalf("%d orders for one certificate", n)
	}
	// The other two want it too: they take it from the cluster.
	hosts[1].startApp("shop", map[string]string{"domains": domain, "name": "shop"})
	hosts[2].startApp("shop", map[string]string{"domains": domain, "name": "shop"})
	first := waitAllServe(t, hosts, "pebble-clone", "shop", domain, "")
	if n := newOrders(t, pebble); n != 1 {
		t.Errorf("%d orders for one certificate wanted by three hosts", n)
	}
	for _, h := range hosts[1:] {
		if !strings.Contains(h.logs(), "certificate taken from the cluster, no order") {
			t.Errorf("%s did not say it took the certificate from the cluster", h.name)
		}
	}
	// A forced renewal on the second host: one order, every host serves it.
	if out, code := hosts[1].renew("--force", "shop"); code != 0 {
		t.Fatalf("renew --force: exit %d: %s", code, out)
	}
	second := waitAllServe(t, hosts, "pebble-clone", "shop", domain, first)
	if n := newOrders(t, pebble); n != 2 {
		t.Errorf("%d orders after one forced renewal (want 2 in all)", n)
	}
	t.Logf("MEASURE cluster one-order: first %s, renewed %s, orders %d", first, second, newOrders(t, pebble))
	// etcd holds the certificates, and no private key in the clear.
	kvs := etcd.dump(t, "/e2e-"+runID+"-clone/")
	certs := 0
	for k, v := range kvs {
		if strings.Contains(k, "/certs/") {
			certs++
		}
		if strings.Contains(v, "PRIVATE KEY") {
			t.Errorf("etcd key %s holds a private key in the clear", k)
		}
	}
	if certs != 1 || len(kvs) < 5 {
		t.Errorf("etcd holds %d certificates in %d keys under the prefix (want 1 certificate)", certs, len(kvs))
	}
	// Both orders came from one ACME account, shared through etcd.
	if out, _ := docker("logs", pebble); strings.Count(out, "POST /sign-me-up") != 1 {
		t.Errorf("%d accounts registered by the cluster (want 1, shared)", strings.Count(out, "POST /sign-me-up"))
	}
	// Every edgecert restarted: nothing ordered, all proven again.
	for _, h := range hosts {
		if out, err := docker("restart", h.edgecert); err != nil {
			t.Fatalf("restart: %s", out)
		}
	}
	for _, h := range hosts {
		if err := waitUntil(60*time.Second, func() error {
			if out, code := h.cli("health"); code != 0 {
				return fmt.Errorf("%s: %s", h.name, out)
			}
			if c, ok := h.cert("shop"); !ok || !c.Deployed || c.Serial != second {
				return fmt.Errorf("%s after its restart: %+v", h.name, c)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitAllServe(t, hosts, "pebble-clone", "shop", domain, first)
	if n := newOrders(t, pebble); n != 2 {
		t.Errorf("%d orders after every edgecert restarted (want still 2)", n)
	}
}

// noChallengeServer is a port-80 server that does not serve the challenge
// directory: a host whose nginx is not ready for HTTP-01.
const noChallengeServer = `server {
    listen 80 default_server;
    location / { return 404; }
}
`

// lockHolder waits until one of hosts says it holds the lock to order, and
// returns it.
func lockHolder(t *testing.T, hosts []*stack) *stack {
	t.Helper()
	var holder *stack
	if err := waitUntil(60*time.Second, func() error {
		for _, h := range hosts {
			if strings.Contains(h.logs(), "this host holds the certificate's lock") {
				holder = h
				return nil
			}
		}
		return fmt.Errorf("no host orders")
	}); err != nil {
		t.Fatal(err)
	}
	return holder
}

// TestClusterTakeOver: the host ordering a certificate is killed between
// new-order and finalize (its order waits for a third host that wants the
// name but whose nginx does not serve the token yet); another host
// completes the certificate within the lease TTL plus an order, with one
// extra order at most, and no host serves a mismatched pair.
func TestClusterTakeOver(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t, "cltake")
	pebble, err := startPebble("pebble-cltake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	const domain = "take.cltake.test"
	env := []string{"EDGECERT_CLUSTER_ACK_WAIT=2m"}
	h3 := clusterHostWith(t, "cltake", 3, "pebble-cltake", etcd, func(s *stack) { s.writeConf("00-http.conf", noChallengeServer) }, env...)
	h1 := clusterHost(t, "cltake", 1, "pebble-cltake", etcd, env...)
	h2 := clusterHost(t, "cltake", 2, "pebble-cltake", etcd, env...)
	hosts := []*stack{h1, h2, h3}
	for _, h := range hosts {
		h.writeConf("10-take.conf", tlsServer("take", domain))
	}
	// The CA asks host 3: the host that takes over gets its token there once
	// its nginx is mended (the killed host's nginx has no one to write it).
	h3.point(domain)
	h3.startApp("take", map[string]string{"domains": domain, "name": "take"})
	h1.startApp("take", map[string]string{"domains": domain, "name": "take"})
	h2.startApp("take", map[string]string{"domains": domain, "name": "take"})
	x := lockHolder(t, []*stack{h1, h2})
	y := h1
	if x == h1 {
		y = h2
	}
	if err := waitUntil(30*time.Second, func() error {
		if n := newOrders(t, pebble); n != 1 {
			return fmt.Errorf("%d orders placed", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// x has placed its order and waits for h3 to serve the token: kill it.
	killed := time.Now()
	if out, err := docker("kill", x.edgecert); err != nil {
		t.Fatalf("kill: %s", out)
	}
	// h3's nginx is mended: the next order's token reaches it.
	h3.writeConf("00-http.conf", httpServer)
	if out, err := docker("kill", "-s", "HUP", h3.nginx); err != nil {
		t.Fatalf("reload h3's nginx: %s", out)
	}
	serial := waitAllServe(t, []*stack{y, h3}, "pebble-cltake", "take", domain, "")
	took := time.Since(killed)
	orders := newOrders(t, pebble)
	if orders > 2 {
		t.Errorf("%d orders: more than one extra after the take-over", orders)
	}
	if !strings.Contains(y.logs(), "this host holds the certificate's lock") {
		t.Errorf("%s served it without ordering it, and %s was killed", y.name, x.name)
	}
	for _, h := range hosts {
		link := filepath.Join(h.dir, "certs", "take")
		if h != x {
			if err := pairFits(link); err != nil {
				t.Errorf("%s's volume: %v", h.name, err)
			}
			continue
		}
		// The killed host holds its placeholder, or nothing: never half a pair.
		chain, _ := os.ReadFile(filepath.Join(link, "fullchain.pem"))
		key, _ := os.ReadFile(filepath.Join(link, "privkey.pem"))
		if len(chain)+len(key) > 0 {
			if _, err := tls.X509KeyPair(chain, key); err != nil {
				t.Errorf("%s (killed) holds a mismatched pair: %v", h.name, err)
			}
		}
	}
	t.Logf("MEASURE cluster take-over: killed %s; %s served %s %.1f s later (TTL 3 s); orders %d", x.name, y.name, serial, took.Seconds(), orders)
	// The killed host comes back: it takes the certificate, orders nothing.
	if out, err := docker("start", x.edgecert); err != nil {
		t.Fatalf("start: %s", out)
	}
	waitAllServe(t, hosts, "pebble-cltake", "take", domain, "")
	if n := newOrders(t, pebble); n != orders {
		t.Errorf("%d orders after the killed host came back (was %d)", n, orders)
	}
}

// TestClusterQuorum: with one etcd member of three stopped, a forced
// renewal happens once; with two stopped, no host orders, every host
// keeps serving, and health and status say why; when they return, the
// renewal asked for meanwhile happens once.
func TestClusterQuorum(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t, "clquorum")
	pebble, err := startPebble("pebble-clquorum")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	hosts := clusterHosts(t, "clquorum", "pebble-clquorum", etcd, 3)
	const domain = "q.clquorum.test"
	hosts[0].point(domain)
	for _, h := range hosts {
		h.writeConf("10-q.conf", tlsServer("q", domain))
		h.startApp("q", map[string]string{"domains": domain, "name": "q"})
	}
	first := waitAllServe(t, hosts, "pebble-clquorum", "q", domain, "")
	if n := newOrders(t, pebble); n != 1 {
		t.Fatalf("%d orders for one certificate", n)
	}
	// One member down: quorum holds.
	if out, err := docker("stop", etcd.names[2]); err != nil {
		t.Fatalf("stop: %s", out)
	}
	if out, code := hosts[1].renew("--force", "q"); code != 0 {
		t.Fatalf("renew --force with 2 of 3 members: exit %d: %s", code, out)
	}
	second := waitAllServe(t, hosts, "pebble-clquorum", "q", domain, first)
	if n := newOrders(t, pebble); n != 2 {
		t.Errorf("%d orders after one forced renewal with one member down (want 2)", n)
	}
	// Two down: no quorum.
	if out, err := docker("stop", etcd.names[1]); err != nil {
		t.Fatalf("stop: %s", out)
	}
	for _, h := range hosts {
		if err := waitUntil(60*time.Second, func() error {
			out, code := h.cli("health")
			if code == 0 || !strings.Contains(out, "cluster unreachable") {
				return fmt.Errorf("%s health: exit %d: %s", h.name, code, out)
			}
			if cs := h.clusterStatus(); cs.Cluster == nil || cs.Cluster.Reachable {
				return fmt.Errorf("%s status: %+v", h.name, cs.Cluster)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := hosts[0].cli("status")
	if !strings.Contains(out, "CLUSTER UNREACHABLE") {
		t.Errorf("status without quorum does not say so:\n%s", out)
	}
	// A renewal asked for now is answered at once (held, kept); nothing is
	// ordered; all keep serving.
	start := time.Now()
	rout, code := hosts[2].renew("--force", "q")
	if code != 1 || !strings.Contains(rout, "held") || !strings.Contains(rout, "cluster unreachable") || !strings.Contains(rout, "placed once") {
		t.Errorf("renew --force without quorum: exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), rout)
	}
	t.Logf("MEASURE cluster quorum: renew without quorum answered in %s", time.Since(start).Round(time.Millisecond))
	if err := waitUntil(30*time.Second, func() error {
		if c, _ := hosts[2].cert("q"); !strings.Contains(c.Waiting, "cluster unreachable") {
			return fmt.Errorf("the renewal asked for does not wait for the cluster: %+v", c)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	roots := caRoots(t, "pebble-clquorum")
	for _, h := range hosts {
		if leaf, err := h.verified(roots, domain); err != nil || serialOf(leaf) != second {
			t.Errorf("%s without quorum: %v", h.name, err)
		}
	}
	if n := newOrders(t, pebble); n != 2 {
		t.Errorf("%d orders without quorum (want still 2)", n)
	}
	for _, i := range []int{1, 2} {
		if out, err := docker("start", etcd.names[i]); err != nil {
			t.Fatalf("start: %s", out)
		}
	}
	// The renewal kept is placed by itself when quorum returns, once.
	third := waitAllServe(t, hosts, "pebble-clquorum", "q", domain, second)
	if n := newOrders(t, pebble); n != 3 {
		t.Errorf("%d orders after quorum returned (want 3: the renewal asked for meanwhile, once)", n)
	}
	t.Logf("MEASURE cluster quorum: serials %s %s %s, orders %d", first, second, third, newOrders(t, pebble))
}

// TestClusterHostCut: one host cut from etcd (its edgecert disconnected
// from etcd's network) during a renewal: the others renew and prove; it
// keeps serving the old certificate and says why; reconnected, it writes
// and proves the new one with no order.
func TestClusterHostCut(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t, "clcut")
	pebble, err := startPebble("pebble-clcut")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	// Host 3 reaches etcd through a relay in this test, which can cut it
	// (a network disconnect would not: the engine routes between its
	// networks through the host).
	relay := newEtcdRelay(t, etcd)
	hosts := []*stack{clusterHost(t, "clcut", 1, "pebble-clcut", etcd), clusterHost(t, "clcut", 2, "pebble-clcut", etcd),
		clusterHostWith(t, "clcut", 3, "pebble-clcut", etcd, func(s *stack) { s.alsoOn = nil }, "EDGECERT_ETCD_ENDPOINTS="+relay.endpoints())}
	const domain = "cut.clcut.test"
	hosts[0].point(domain)
	for _, h := range hosts {
		h.writeConf("10-cut.conf", tlsServer("cut", domain))
		h.startApp("cut", map[string]string{"domains": domain, "name": "cut"})
	}
	first := waitAllServe(t, hosts, "pebble-clcut", "cut", domain, "")
	cut := hosts[2]
	relay.setCut(true)
	if err := waitUntil(60*time.Second, func() error {
		if out, code := cut.cli("health"); code == 0 || !strings.Contains(out, "cluster unreachable") {
			return fmt.Errorf("health of the cut host: exit %d: %s", code, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, code := hosts[0].renew("--force", "cut"); code != 0 {
		t.Fatalf("renew --force: exit %d: %s", code, out)
	}
	second := waitAllServe(t, hosts[:2], "pebble-clcut", "cut", domain, first)
	roots := caRoots(t, "pebble-clcut")
	if leaf, err := cut.verified(roots, domain); err != nil || serialOf(leaf) != first {
		t.Errorf("the cut host: %v (want the old %s still served)", err, first)
	}
	// Two needs (the first certificate, the forced renewal): two
	// certificates issued, and at most two orders but for those that
	// failed (a CA too slow to answer an order within 30 s on a loaded
	// machine: the need is ordered again at its retry; a request that
	// failed before the CA added its order adds none).
	orders := newOrders(t, pebble)
	if issued, failed := len(issuedAtCA(pebble)), failedOrders(hosts); issued != 2 || orders > 2+failed {
		t.Errorf("%d orders, %d failed, %d certificates issued (want at most 2 orders but for the failed ones, 2 issued)", orders, failed, issued)
	}
	relay.setCut(false)
	if got := waitAllServe(t, hosts, "pebble-clcut", "cut", domain, first); got != second {
		t.Errorf("after the reconnection every host serves %s, want %s", got, second)
	}
	if n := newOrders(t, pebble); n != orders {
		t.Errorf("%d orders after the cut host came back (was %d)", n, orders)
	}
}

// TestClusterTwenty: twenty certificates across three hosts, several
// wanted by two or three of them: each is ordered once, and every host
// that wants one serves it and proves it; a restart of every edgecert
// orders nothing.
func TestClusterTwenty(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t, "clmany")
	pebble, err := startPebble("pebble-clmany")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	hosts := clusterHosts(t, "clmany", "pebble-clmany", etcd, 3)
	// Host 1 wants 1-10, host 2 6-15, host 3 11-20 and 1-3.
	wanted := map[int][]*stack{}
	for n := 1; n <= 20; n++ {
		if n <= 10 {
			wanted[n] = append(wanted[n], hosts[0])
		}
		if n >= 6 && n <= 15 {
			wanted[n] = append(wanted[n], hosts[1])
		}
		if n >= 11 || n <= 3 {
			wanted[n] = append(wanted[n], hosts[2])
		}
	}
	name := func(n int) string { return fmt.Sprintf("c%02d", n) }
	domain := func(n int) string { return name(n) + ".clmany.test" }
	for n := 1; n <= 20; n++ {
		hs := wanted[n]
		hs[len(hs)-1].point(domain(n)) // the CA asks the last host that wants it
		for _, h := range hs {
			h.writeConf("10-"+name(n)+".conf", tlsServer(name(n), domain(n)))
		}
	}
	start := time.Now()
	for n := 1; n <= 20; n++ {
		for _, h := range wanted[n] {
			cname := h.createApp(name(n), map[string]string{"domains": domain(n), "name": name(n)})
			if out, err := docker("start", cname); err != nil {
				t.Fatalf("start %s: %s", cname, out)
			}
		}
	}
	// Served first (handshakes only, cheap), timed; then every proof. (About
	// 20 s alone here, 107 s with the whole suite running in parallel.)
	roots := caRoots(t, "pebble-clmany")
	if err := waitUntil(6*time.Minute, func() error {
		for n := 1; n <= 20; n++ {
			for _, h := range wanted[n] {
				if _, err := h.verified(roots, domain(n)); err != nil {
					return fmt.Errorf("%s %s: %w", h.name, name(n), err)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for n := 1; n <= 20; n++ {
		waitAllServe(t, wanted[n], "pebble-clmany", name(n), domain(n), "")
	}
	proven := time.Since(start)
	if n := newOrders(t, pebble); n != 20 {
		t.Errorf("%d orders for 20 certificates on 3 hosts (want 20)", n)
	}
	t.Logf("MEASURE cluster twenty: 20 certificates (33 wishes on 3 hosts, 33 app containers started one by one) all served %.1f s after the first app started, all proofs seen in status %.1f s; orders %d",
		took.Seconds(), proven.Seconds(), newOrders(t, pebble))
	for _, h := range hosts {
		if out, err := docker("restart", h.edgecert); err != nil {
			t.Fatalf("restart: %s", out)
		}
	}
	for _, h := range hosts {
		if err := waitUntil(90*time.Second, func() error {
			doc := h.status()
			proven := 0
			for _, c := range doc.Certificates {
				if c.Deployed {
					proven++
				}
			}
			if want := map[*stack]int{hosts[0]: 10, hosts[1]: 10, hosts[2]: 13}[h]; proven != want {
				return fmt.Errorf("%s: %d of %d proven after its restart", h.name, proven, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := newOrders(t, pebble); n != 20 {
		t.Errorf("%d orders after every edgecert restarted (want still 20)", n)
	}
}

// etcdRelay forwards TCP from the test network (the gateway's address) to
// each etcd member, and can cut every connection through it and refuse new
// ones: one host cut from etcd while the others keep it.
type etcdRelay struct {
	t     *testing.T
	ports []int
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func newEtcdRelay(t *testing.T, e *etcdCluster) *etcdRelay {
	t.Helper()
	r := &etcdRelay{t: t, conns: map[net.Conn]bool{}}
	for i := range e.names {
		ln, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		r.ports = append(r.ports, ln.Addr().(*net.TCPAddr).Port)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// The member's address is read for each connection: a member
				// stopped and started again may have another.
				go r.relay(c, e.ip(i)+":2379")
			}
		}()
	}
	t.Cleanup(func() { r.setCut(true) })
	return r
}

func (r *etcdRelay) relay(c net.Conn, target string) {
	r.mu.Lock()
	if r.cut {
		r.mu.Unlock()
		c.Close()
		return
	}
	r.conns[c] = true
	r.mu.Unlock()
	u, err := net.DialTimeout("tcp", target, 3*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	r.conns[u] = true
	r.mu.Unlock()
	go func() { _, _ = io.Copy(u, c); u.Close() }()
	_, _ = io.Copy(c, u)
	c.Close()
}

// setCut cuts the relay (every connection closed, new ones refused) or
// mends it.
func (r *etcdRelay) setCut(cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = cut
	if cut {
		for c := range r.conns {
			c.Close()
		}
		r.conns = map[net.Conn]bool{}
	}
}

// endpoints are the relay's addresses as containers on the test network
// reach them (the network's gateway is this host).
func (r *etcdRelay) endpoints() string {
	var eps []string
	for _, p := range r.ports {
		eps = append(eps, fmt.Sprintf("http://%s.1:%d", subnet, p))
	}
	return strings.Join(eps, ",")
}

// dump reads every key under prefix through etcd's JSON gateway (the
// test's view of what etcd's disk holds): key -> value.
func (e *etcdCluster) dump(t *testing.T, prefix string) map[string]string {
	t.Helper()
	end := []byte(prefix)
	end[len(end)-1]++
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(prefix)),
		"range_end": base64.StdEncoding.EncodeToString(end)})
	resp, err := http.Post("http://"+e.ip(0)+":2379/v3/kv/range", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Kvs []struct{ Key, Value string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	kvs := map[string]string{}
	for _, kv := range out.Kvs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		v, _ := base64.StdEncoding.DecodeString(kv.Value)
		kvs[string(k)] = string(v)
	}
	return kvs
}
