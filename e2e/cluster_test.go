package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Cluster mode: three hosts on one etcd. Each "host" is its own nginx,
// edgecert and volumes, seeing only its own containers through its own
// label prefix, as separate engines would.

// etcdCluster is a three-member etcd on the test network, from the
// edgecert-etcd:e2e image (the server built from etcd's module source).
type etcdCluster struct {
	t     *testing.T
	names []string
	ips   []string
}

func startEtcd(t *testing.T, tag string) *etcdCluster {
	t.Helper()
	e := &etcdCluster{t: t}
	var initial []string
	for i := range 3 {
		e.names = append(e.names, fmt.Sprintf("e2e-%s-%s-etcd%d", runID, tag, i+1))
		e.ips = append(e.ips, newIP())
		initial = append(initial, fmt.Sprintf("m%d=http://%s:2380", i+1, e.ips[i]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range e.names {
				out, _ := docker("logs", "--tail", "20", n)
				t.Logf("--- last logs of %s:\n%s", n, out)
			}
		}
		docker(append([]string{"rm", "-f"}, e.names...)...)
	})
	for i, n := range e.names {
		if out, err := docker("run", "-d", "--name", n, "--label", "edgecert-e2e="+runID, "--network", netName, "--ip", e.ips[i],
			"edgecert-etcd:e2e", "--name", fmt.Sprintf("m%d", i+1), "--data-dir", "/var/lib/etcd/data",
			"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://"+e.ips[i]+":2379",
			"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://"+e.ips[i]+":2380",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", runID+"-"+tag, "--log-level", "warn"); err != nil {
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
	for _, ip := range e.ips {
		eps = append(eps, "http://"+ip+":2379")
	}
	return strings.Join(eps, ",")
}

// waitHealthy waits until member i says it is healthy (it has a leader).
func (e *etcdCluster) waitHealthy(i int) {
	e.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	if err := waitUntil(60*time.Second, func() error {
		resp, err := client.Get("http://" + e.ips[i] + ":2379/health")
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
// ordering from the Pebble known as pebble.
func clusterHosts(t *testing.T, tag, pebble string, etcd *etcdCluster, n int, env ...string) []*stack {
	t.Helper()
	var hosts []*stack
	for i := range n {
		s := newStack(t, fmt.Sprintf("%s%d", tag, i+1))
		s.pebble = pebble
		s.startNginx()
		s.startEdgecert(append([]string{"EDGECERT_ACME_EMAIL=ops@" + tag + ".test", "EDGECERT_ETCD_ENDPOINTS=" + etcd.endpoints(), "EDGECERT_CLUSTER_SECRET=e2e-cluster-secret-0123456789",
			"EDGECERT_NODE=" + s.name, "EDGECERT_CLUSTER_TTL=3s", "EDGECERT_ETCD_PREFIX=/e2e-" + runID + "-" + tag + "/"}, env...)...)
		hosts = append(hosts, s)
	}
	return hosts
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
	var serial string
	if err := waitUntil(90*time.Second, func() error {
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
