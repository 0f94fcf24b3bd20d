package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is a webhook endpoint in the test, reachable from containers at
// the test network's gateway address.
type receiver struct {
	url string
	mu  sync.Mutex
	got map[string][]map[string]any // by path
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatalf("listen on the network's gateway: %v", err)
	}
	r := &receiver{url: "http://" + ln.Addr().String(), got: map[string][]map[string]any{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var v map[string]any
		body, _ := io.ReadAll(req.Body)
		if json.Unmarshal(body, &v) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got[req.URL.Path] = append(r.got[req.URL.Path], v)
		r.mu.Unlock()
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

// events returns the "event" field of the notices for cert on path.
func (r *receiver) events(path, cert string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, v := range r.got[path] {
		if v["cert"] == cert {
			out = append(out, fmt.Sprint(v["event"]))
		}
	}
	return out
}

func (r *receiver) texts(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, v := range r.got[path] {
		out = append(out, fmt.Sprint(v["text"]))
	}
	return out
}

// TestOperator: what an operator sees: status --json field by field and its
// exit codes through issuance, forced renewal, a failing reload and a
// failing order; one failure and one recovery notice for one failure
// episode; the deploy hook's environment; the metrics endpoint.
func TestOperator(t *testing.T) {
	t.Parallel()
	hooks := newReceiver(t)
	s := newStack(t, "ops")
	d := s.domain("site")
	hookDir := filepath.Join(s.dir, "hook")
	if err := os.MkdirAll(hookDir, 0o755); err != nil {
		t.Fatal(err)
	}
	testapp, _ := filepath.Abs("../build/bin/testapp")
	s.extraArgs = []string{"-v", testapp + ":/usr/local/bin/testapp:ro", "-v", hookDir + ":/hook"}
	s.point(d)
	s.startNginx()
	s.startEdgecert("EDGECERT_WEBHOOK_URLS="+hooks.url+"/generic", "EDGECERT_SLACK_WEBHOOK_URLS="+hooks.url+"/slack",
		"EDGECERT_DEPLOY_HOOK=testapp dump-env /hook/env", "EDGECERT_METRICS_ADDR=:9090")
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", d))
	// An order takes tens of milliseconds: to see the state before it, nginx
	// is stopped first (orders wait while no labelled proxy runs).
	if out, err := docker("stop", s.nginx); err != nil {
		t.Fatalf("stop nginx: %s", out)
	}
	s.startApp("app", map[string]string{"domains": d, "name": "site", "key_type": "ec384"})

	// Before issuance: the placeholder, nothing proven, nothing planned.
	var before certView
	if err := waitUntil(10*time.Second, func() error {
		var ok bool
		if before, ok = s.cert("site"); !ok {
			return errString("not in status yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if before.State != "placeholder" || before.Serial == "" || before.Deployed || len(before.Reloads) != 0 ||
		!before.RenewAt.IsZero() || before.LastError != "" || before.KeyType != "ec384" || len(before.History) != 0 {
		t.Errorf("status before issuance = %+v, want a placeholder with nothing proven or planned", before)
	}
	if out, err := docker("start", s.nginx); err != nil {
		t.Fatalf("start nginx: %s", out)
	}

	leaf1 := s.waitServed(roots, d, 150*time.Second)
	if leaf1 == before.Serial {
		t.Errorf("the served certificate is the placeholder")
	}
	s.waitDeployed("site")

	t.Run("status_after_issuance", func(t *testing.T) {
		c, _ := s.cert("site")
		checks := []struct {
			field string
			ok    bool
		}{
			{"state valid", c.State == "valid"},
			{"domains", len(c.Domains) == 1 && c.Domains[0] == d},
			{"containers", len(c.Containers) == 1 && strings.HasSuffix(c.Containers[0], "-ops-app")},
			{"key_type from label", c.KeyType == "ec384"},
			{"profile", c.Profile == "default"},
			{"serial = served", c.Serial == leaf1},
			{"issuer", c.Issuer != ""},
			{"not_after ~90 days", time.Until(c.NotAfter) > 89*24*time.Hour},
			{"renew_at by ARI, before expiry", c.RenewSource == "ari" && c.RenewAt.Before(c.NotAfter) && c.RenewAt.After(time.Now())},
			{"no error", c.LastError == "" && c.DeployError == "" && c.NextRetry.IsZero() && c.Failures == 0},
			{"deployed", c.Deployed},
			{"reload proven", len(c.Reloads) == 1 && c.Reloads[0].OK && c.Reloads[0].Reloaded && c.Reloads[0].FailedStep == ""},
			{"history", len(c.History) == 2 && c.History[0].Kind == "issued" && c.History[1].Kind == "reload_proven"},
		}
		for _, ch := range checks {
			if !ch.ok {
				t.Errorf("%s: got %+v", ch.field, c)
			}
		}
		if _, code := s.cli("status"); code != 0 {
			t.Errorf("status exit %d with everything valid, want 0", code)
		}
		if out, code := s.cli("status", "--warn-days", "100"); code != 1 || !strings.Contains(out, "expires in") {
			t.Errorf("status --warn-days 100: exit %d, want 1 naming the expiry:\n%s", code, out)
		}
		if out, code := s.cli("status", d); code != 0 || !strings.Contains(out, "history") || !strings.Contains(out, leaf1) {
			t.Errorf("status DOMAIN: exit %d:\n%s", code, out)
		}
	})

	t.Run("deploy_hook_environment", func(t *testing.T) {
		env := map[string]string{}
		if err := waitUntil(10*time.Second, func() error {
			data, err := os.ReadFile(filepath.Join(hookDir, "env"))
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok {
					env[k] = v
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"EDGECERT_CERT_NAME": "site", "EDGECERT_DOMAINS": d, "EDGECERT_SERIAL": leaf1,
			"EDGECERT_FULLCHAIN": "/etc/edgecert/certs/site/fullchain.pem", "EDGECERT_PRIVKEY": "/etc/edgecert/certs/site/privkey.pem",
			"RENEWED_LINEAGE": "/etc/edgecert/certs/site", "RENEWED_DOMAINS": d} // certbot's names
		for k, v := range want {
			if env[k] != v {
				t.Errorf("hook env %s = %q, want %q (all: %v)", k, env[k], v, env)
			}
		}
	})

	ip, _ := docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", s.edgecert)
	scrape := func() map[string]float64 {
		t.Helper()
		resp, err := http.Get("http://" + ip + ":9090/metrics")
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		defer resp.Body.Close()
		out := map[string]float64{}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") {
				continue
			}
			if i := strings.LastIndex(line, " "); i > 0 {
				v, _ := strconv.ParseFloat(line[i+1:], 64)
				out[line[:i]] = v
			}
		}
		return out
	}
	proven := `edgecert_reloads_total{container="` + s.nginx + `",result="proven"}`
	m0 := scrape()
	c, _ := s.cert("site")
	if got := m0[`edgecert_certificate_not_after_timestamp_seconds{cert="site"}`]; got != float64(c.NotAfter.Unix()) {
		t.Errorf("metric not_after = %v, want %d", got, c.NotAfter.Unix())
	}

	t.Run("renew_force_moves_status_and_metrics", func(t *testing.T) {
		if out, code := s.renew("--force", d); code != 0 || !strings.Contains(out, "proven") {
			t.Fatalf("renew --force DOMAIN: exit %d:\n%s", code, out)
		}
		c, _ := s.cert("site")
		if c.Serial == leaf1 || c.State != "valid" || len(c.History) != 4 || c.History[2].Kind != "issued" {
			t.Errorf("after renew: %+v", c)
		}
		if m := scrape(); m[proven] != m0[proven]+1 || m[`edgecert_orders_total{result="issued"}`] != 2 {
			t.Errorf("metrics: reloads proven %v -> %v, orders issued %v; want +1 and 2", m0[proven], m[proven], m[`edgecert_orders_total{result="issued"}`])
		}
	})

	t.Run("rollback_serves_the_previous_and_holds", func(t *testing.T) {
		cur, _ := s.cert("site")
		if out, code := s.cli("rollback", "site"); code != 0 || !strings.Contains(out, "rolled back to serial "+leaf1+" and proven served") {
			t.Fatalf("rollback: exit %d:\n%s", code, out)
		}
		if err := waitUntil(10*time.Second, func() error {
			leaf, err := s.verified(roots, d)
			if err != nil {
				return err
			}
			if serialOf(leaf) != leaf1 {
				return errString("nginx serves " + serialOf(leaf))
			}
			return nil
		}); err != nil {
			t.Fatalf("after the rollback nginx does not serve serial %s: %v", leaf1, err)
		}
		c, _ := s.cert("site")
		if c.Serial != leaf1 || c.Held == nil || c.Held.From != cur.Serial || !c.RenewAt.IsZero() || !c.Deployed {
			t.Errorf("status after rollback: serial %s held %+v renew_at %v deployed %v; want %s held from %s, no renewal planned",
				c.Serial, c.Held, c.RenewAt, c.Deployed, leaf1, cur.Serial)
		}
		if out, _ := s.cli("status"); !strings.Contains(out, "held (rollback)") {
			t.Errorf("the status table does not show the hold:\n%s", out)
		}
		if out, code := s.cli("rollback", "site", "--to", "ffff"); code != 1 || !strings.Contains(out, "no kept version with serial ffff") {
			t.Errorf("rollback to an unknown serial: exit %d:\n%s", code, out)
		}
		// renew releases the hold; the certificate put back is not due, so
		// nothing is ordered.
		if out, code := s.renew("site"); code != 0 || !strings.Contains(out, "not due") {
			t.Errorf("renew after the rollback: exit %d:\n%s", code, out)
		}
		if c, _ := s.cert("site"); c.Held != nil || c.RenewAt.IsZero() || c.Serial != leaf1 {
			t.Errorf("after renew: held %+v renew_at %v serial %s; want released, planned, still %s", c.Held, c.RenewAt, c.Serial, leaf1)
		}
	})

	t.Run("one_failure_and_one_recovery_notice", func(t *testing.T) {
		s.writeConf("20-broken.conf", "server { listen 8081; bogus_directive on; }\n")
		if _, code := s.renew("--force", "site"); code != 1 {
			t.Fatalf("renew with a broken config: exit %d, want 1", code)
		}
		if out, code := s.cli("status"); code != 1 || !strings.Contains(out, "failing") {
			t.Errorf("status while failing: exit %d, want 1:\n%s", code, out)
		}
		// Let a second attempt fail too (15 s backoff): still one notice.
		if err := waitUntil(60*time.Second, func() error {
			if n := strings.Count(s.logs(), "deployment failed"); n < 2 {
				return errString(fmt.Sprintf("%d failed deployments", n))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(s.dir, "conf", "20-broken.conf")); err != nil {
			t.Fatal(err)
		}
		if err := waitUntil(150*time.Second, func() error {
			if ev := hooks.events("/generic", "site"); len(ev) < 2 {
				return errString(fmt.Sprintf("notices so far: %v", ev))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		s.waitDeployed("site")
		if ev := hooks.events("/generic", "site"); strings.Join(ev, ",") != "failure,recovery" {
			t.Errorf("generic notices = %v, want exactly failure,recovery", ev)
		}
		if tx := hooks.texts("/slack"); len(tx) != 2 || !strings.Contains(tx[0], "site") || !strings.Contains(tx[0], "FAILED") || !strings.Contains(tx[0], "bogus_directive") {
			t.Errorf("slack texts = %q", tx)
		}
		if _, code := s.cli("status"); code != 0 {
			t.Errorf("status after recovery: exit %d, want 0", code)
		}
		if m := scrape(); m[`edgecert_reload_failures_total{step="config_test"}`] < 2 {
			t.Errorf("metric reload failures at config_test = %v, want >= 2", m[`edgecert_reload_failures_total{step="config_test"}`])
		}
	})

	t.Run("failing_order_in_status", func(t *testing.T) {
		// A name the test DNS does not point at nginx: the CA cannot validate it.
		bad := s.domain("nodns")
		s.startApp("lost", map[string]string{"domains": bad, "name": "lost"})
		var c certView
		if err := waitUntil(150*time.Second, func() error {
			c, _ = s.cert("lost")
			if c.State != "failing" {
				return errString("state " + c.State)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if c.LastError == "" || c.Failures != 1 || c.Permanent || time.Until(c.NextRetry) < 30*time.Second || c.RenewSource != "retry" ||
			len(c.History) == 0 || c.History[len(c.History)-1].Kind != "order_failed" {
			t.Errorf("failing order in status: %+v", c)
		}
		if out, code := s.cli("status"); code != 1 || !strings.Contains(out, "lost") {
			t.Errorf("status with a failing order: exit %d, want 1:\n%s", code, out)
		}
		if err := waitUntil(20*time.Second, func() error {
			if ev := hooks.events("/generic", "lost"); len(ev) != 1 || ev[0] != "failure" {
				return errString(fmt.Sprintf("notices for lost: %v", ev))
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
}
