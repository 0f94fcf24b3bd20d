package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStuckProxyFailsAlone: beside a good nginx runs a second proxy whose
// config test never returns. Every deployment is proven on the good nginx
// and reported, with the stuck one's timeout, within EDGECERT_RELOAD_TIMEOUT;
// renewals go on; one failure notice goes out; once the stuck proxy is gone
// the certificate recovers.
func TestStuckProxyFailsAlone(t *testing.T) {
	t.Parallel()
	hooks := newReceiver(t)
	s := newStack(t, "stuck")
	d := s.domain("site")
	s.point(d)
	s.startNginx()
	testapp, _ := filepath.Abs("../build/bin/testapp")
	stuck := "e2e-" + runID + "-stuck-hung"
	if err := os.MkdirAll(filepath.Join(s.dir, "conf-stuck"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "conf-stuck", "00-http.conf"), []byte(httpServer), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startProxy(proxySpec{name: stuck, ip: newIP(), conf: "conf-stuck",
		labels: map[string]string{"nginx": "true", "config_test": "/testapp sleep 3600"},
		args:   []string{"-v", testapp + ":/testapp:ro"}})
	const timeout = 5 * time.Second
	s.startEdgecert("EDGECERT_RELOAD_TIMEOUT=5s", "EDGECERT_RELOAD_DEBOUNCE=200ms", "EDGECERT_WEBHOOK_URLS="+hooks.url+"/generic")
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", d))
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	s.waitServed(roots, d, 150*time.Second)

	for round := 1; round <= 2; round++ {
		before, _ := s.cert("site")
		start := time.Now()
		out, code := s.renew("--force", "site")
		took := time.Since(start)
		c, _ := s.cert("site")
		var issued int64
		for _, h := range c.History {
			if h.Kind == "issued" && h.Serial == c.Serial {
				issued = h.TookMS
			}
		}
		t.Logf("MEASURE stuck_proxy round=%d renew_ms=%d order_ms=%d reload_timeout_ms=%d", round, took.Milliseconds(), issued, timeout.Milliseconds())
		if code != 1 || !strings.Contains(out, stuck) || !strings.Contains(out, "timed out after 5s") {
			t.Fatalf("round %d: renew --force: exit %d:\n%s\nwant exit 1 naming the stuck proxy's timeout", round, code, out)
		}
		if c.Serial == before.Serial {
			t.Fatalf("round %d: serial unchanged (%s)", round, c.Serial)
		}
		// The deployment ended after the reload timeout and a margin wide
		// enough for a loaded machine, not at the end of renew's 10 minutes:
		// the order's own time is left out.
		if deploy := took - time.Duration(issued)*time.Millisecond; deploy > timeout+60*time.Second {
			t.Errorf("round %d: the deployment took %s with a %s reload timeout", round, deploy, timeout)
		}
		leaf, err := s.verified(roots, d)
		if err != nil || serialOf(leaf) != c.Serial {
			t.Fatalf("round %d: the good nginx serves %v, %v; want serial %s", round, leaf, err, c.Serial)
		}
		reports := map[string]reload{}
		for _, r := range c.Reloads {
			reports[r.Container] = r
		}
		if good := reports[s.nginx]; !good.OK {
			t.Errorf("round %d: the good nginx's report = %+v, want proven", round, good)
		}
		if bad := reports[stuck]; bad.OK || bad.FailedStep != "config_test" || !strings.Contains(bad.Error, "timed out after 5s") {
			t.Errorf("round %d: the stuck proxy's report = %+v, want config_test timed out", round, bad)
		}
		if c.State != "failing" || !strings.Contains(c.DeployError, stuck) {
			t.Errorf("round %d: status = %s, deploy_error %q; want failing, naming the stuck proxy", round, c.State, c.DeployError)
		}
	}
	if ev := hooks.events("/generic", "site"); strings.Join(ev, ",") != "failure" {
		t.Errorf("notices = %v, want one failure for the whole episode", ev)
	}

	if out, err := docker("rm", "-f", stuck); err != nil {
		t.Fatal(out)
	}
	if err := waitUntil(60*time.Second, func() error {
		c, _ := s.cert("site")
		if c.State != "valid" || !c.Deployed || c.DeployError != "" {
			return fmt.Errorf("status %s deployed=%v %q", c.State, c.Deployed, c.DeployError)
		}
		return nil
	}); err != nil {
		t.Fatalf("no recovery once the stuck proxy is gone: %v", err)
	}
	if err := waitUntil(30*time.Second, func() error {
		if ev := hooks.events("/generic", "site"); strings.Join(ev, ",") != "failure,recovery" {
			return fmt.Errorf("notices %v", ev)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// TestEventStreamStalls: the engine's event stream goes silent with its
// connection open, and new /events requests get no answer. edgecert's
// health turns red within the documented bound (2 x EDGECERT_DOCKER_RESYNC
// + 30 s) and green again once the stream flows; a container started in
// between is served.
func TestEventStreamStalls(t *testing.T) {
	t.Parallel()
	f := newFilterProxy(t)
	s := newStack(t, "stall")
	s.noSocket = true
	d1, d2 := s.domain("one"), s.domain("two")
	s.point(d1, d2)
	s.startNginx()
	const resync = 5 * time.Second
	s.startEdgecert("DOCKER_HOST=tcp://"+f.addr, "EDGECERT_DOCKER_RESYNC=5s")
	roots := caRoots(t, s.pebble)
	s.writeConf("10-one.conf", tlsServer("one", d1))
	s.startApp("one", map[string]string{"domains": d1, "name": "one"})
	s.waitServed(roots, d1, 150*time.Second)

	f.stall(true)
	stalled := time.Now()
	bound := 2*resync + 30*time.Second
	// The documented bound, plus room for a loaded machine to run the checks.
	if err := waitUntil(bound+30*time.Second, func() error {
		if out, code := s.cli("health"); code == 0 {
			return errString("still healthy: " + out)
		}
		return nil
	}); err != nil {
		f.stall(false)
		t.Fatalf("health stayed green with a stalled event stream: %v", err)
	}
	red := time.Since(stalled)
	t.Logf("MEASURE event_stream_stall health_red_after_ms=%d bound_ms=%d", red.Milliseconds(), bound.Milliseconds())
	if out, code := s.cli("status"); code != 2 || !strings.Contains(out, "Docker") {
		t.Errorf("status while the stream is stalled: exit %d, want 2 and why:\n%s", code, out)
	}
	s.writeConf("11-two.conf", tlsServer("two", d2))
	s.startApp("two", map[string]string{"domains": d2, "name": "two"})
	f.stall(false)
	if err := waitUntil(90*time.Second, func() error {
		if out, code := s.cli("health"); code != 0 {
			return errString(out)
		}
		return nil
	}); err != nil {
		t.Fatalf("health did not turn green after the stream resumed: %v", err)
	}
	s.waitServed(roots, d2, 150*time.Second)
}

// TestSocketProxyHAProxy: edgecert runs through the socket proxy users get
// from compose/docker-compose.socket-proxy.yml: HAProxy with
// compose/socket-proxy/haproxy.cfg, as shipped. The whole loop works through
// it (exec included), and the calls that would make edgecert root on the
// host are refused.
func TestSocketProxyHAProxy(t *testing.T) {
	t.Parallel()
	s := newStack(t, "haproxy")
	s.noSocket = true
	cfg, _ := filepath.Abs("../compose/socket-proxy")
	ip := newIP()
	name := "e2e-" + runID + "-haproxy-socketproxy"
	args := append([]string{"run", "-d", "--name", name, "--network", netName, "--ip", ip,
		"-e", "EDGECERT_LABEL_PREFIX=" + s.prefix,
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", cfg + ":/usr/local/etc/haproxy:ro"}, s.labels()...)
	if out, err := docker(append(args, "edgecert-haproxy:e2e")...); err != nil {
		t.Fatalf("start the socket proxy: %s", out)
	}
	api := "http://" + ip + ":2375"
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body string) int {
		req, _ := http.NewRequest(method, api+path, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if err := waitUntil(20*time.Second, func() error {
		if code := call("GET", "/_ping", ""); code != 200 {
			return fmt.Errorf("ping: %d", code)
		}
		return nil
	}); err != nil {
		out, _ := docker("logs", name)
		t.Fatalf("the socket proxy does not answer: %v\n%s", err, out)
	}

	d := s.domain("site")
	s.point(d)
	s.startNginx()
	s.startEdgecert("DOCKER_HOST=tcp://" + ip + ":2375")
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", d))
	app := s.startApp("app", map[string]string{"domains": d, "name": "site"})
	first := s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")
	out, code := s.renew("--force", "site")
	if code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force through the socket proxy: exit %d:\n%s", code, out)
	}
	if c, _ := s.cert("site"); c.Serial == first || !hasStepIn(c, "config_test") {
		t.Fatalf("after renew: %+v, want a new serial proven with a config test run through the proxy", c)
	}

	// The ways around the rules (compose/socket-proxy/proxy_test.go has the
	// whole table against a fake engine), here against the real one: each
	// refused, and nothing they would have done is done.
	pad := strings.Repeat("A", 20<<10)
	for _, f := range []struct {
		method, path, body string
	}{
		{"POST", "/v1.41/containers/create", `{"Image":"edgecert-testapp:e2e","HostConfig":{"Privileged":true,"Binds":["/:/host"]}}`},
		{"DELETE", "/v1.41/containers/" + s.nginx + "?force=1", ""},
		{"POST", "/v1.41/containers/" + s.nginx + "/stop", ""},
		{"POST", "/v1.41/containers/" + s.nginx + "/start", ""},
		{"GET", "/v1.41/images/json", ""},
		{"POST", "/v1.41/images/create?fromImage=busybox", ""},
		{"GET", "/v1.41/info", ""},
		{"POST", "/v1.41/volumes/create", `{"Name":"x"}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"Cmd":["nginx","-t"],"Privileged":true}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"Cmd":["nginx","-t"],"Privil\u0065ged":true}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"Env":["X=` + pad + `"],"Cmd":["nginx","-t"],"Privileged":true}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"Cmd":["nginx","-t"],"HostConfig":{"Privileged":true}}`},
		{"POST", "/v1.41/containers/" + name + "/exec", `{"User":"0","Cmd":["nginx","-t"]}`},
		{"POST", "/v1.41/containers/" + name + "/exec", `{"Cmd":["nginx","-t"]}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"Cmd":["sh","-c","id"],"AttachStdout":true}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/exec", `{"U\u017fer":"0","Cmd":["nginx","-t"]}`},
		{"POST", "/v1.41/containers/" + s.nginx + "/kill?signal=KILL", ""},
		{"POST", "/v1.41/containers/" + s.nginx + "/kill", ""},
		{"POST", "/v1.41/containers/" + s.nginx + "/kill?sig%6eal=KILL&signal=HUP", ""},
		{"POST", "/v1.41/containers/" + app + "/kill?signal=HUP", ""},
	} {
		if code := call(f.method, f.path, f.body); code != http.StatusForbidden {
			t.Errorf("%s %s %.80s through the socket proxy: %d, want 403", f.method, f.path, f.body, code)
		}
	}
	// A signal in a form body, and a chunked body: sent as written.
	for _, raw := range []string{
		"POST /v1.41/containers/" + s.nginx + "/kill?signal=HUP HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\nConnection: close\r\n\r\nsignal=KILL",
		"POST /v1.41/containers/" + s.nginx + "/kill?signal=HUP HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nb\r\nsignal=KILL\r\n0\r\n\r\n",
	} {
		if code := rawCall(ip+":2375", raw); code != http.StatusForbidden {
			t.Errorf("%q through the socket proxy: %d, want 403", raw, code)
		}
	}
	for _, c := range []string{s.nginx, app, name} {
		if out, err := docker("inspect", "--format", "{{.State.Running}} {{.RestartCount}}", c); err != nil || strings.TrimSpace(out) != "true 0" {
			t.Errorf("container %s after the refused calls: %q, %v; want running, never restarted", c, out, err)
		}
	}
	if len(workerPIDs(s.nginx, "nginx: worker process")) == 0 {
		t.Errorf("nginx is gone after the refused calls")
	}
}

// rawCall sends raw, an HTTP request as written, to addr and returns the
// answer's status code (-1 if there is none within 10 s).
func rawCall(addr, raw string) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return -1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		return -1
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hasStepIn says whether a reload report of c ran step.
func hasStepIn(c certView, step string) bool {
	for _, r := range c.Reloads {
		for _, st := range r.Steps {
			if st.Step == step && st.OK {
				return true
			}
		}
	}
	return false
}
