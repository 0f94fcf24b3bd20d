package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestGroups: two nginx containers in groups a and b; a certificate of group
// a reloads only group a's nginx.
func TestGroups(t *testing.T) {
	t.Parallel()
	s := newStack(t, "groups")
	ipA, ipB := s.ip, newIP()
	nginxB := s.nginx + "-b"
	da, db := s.domain("a"), s.domain("b")
	pointAt(t, ipA, da)
	pointAt(t, ipB, db)
	s.startProxy(proxySpec{name: s.nginx, ip: ipA, conf: "conf", labels: map[string]string{"nginx": "a"}})
	s.writeConfIn("conf-b", "00-http.conf", httpServer)
	s.startProxy(proxySpec{name: nginxB, ip: ipB, conf: "conf-b", labels: map[string]string{"nginx": "b"}})
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	s.writeConf("10-a.conf", tlsServer("a", da))
	s.writeConfIn("conf-b", "10-b.conf", tlsServer("b", db))
	s.startApp("app-a", map[string]string{"domains": da, "name": "a", "proxy": "a"})
	s.startApp("app-b", map[string]string{"domains": db, "name": "b", "proxy": "b"})
	if err := waitUntil(150*time.Second, func() error {
		if _, err := verifiedAt(ipA, roots, da); err != nil {
			return err
		}
		_, err := verifiedAt(ipB, roots, db)
		return err
	}); err != nil {
		t.Fatalf("the groups' certificates were never served: %v", err)
	}
	s.waitDeployed("a", "b")

	before, _ := verifiedAt(ipA, roots, da)
	pidsA, pidsB := workerPIDs(s.nginx, "nginx: worker"), workerPIDs(nginxB, "nginx: worker")
	if out, code := s.renew("--force", "a"); code != 0 {
		t.Fatalf("renew --force a: exit %d:\n%s", code, out)
	}
	after, err := verifiedAt(ipA, roots, da)
	if err != nil || serialOf(after) == serialOf(before) {
		t.Fatalf("group a serves %v, %v; want a new certificate", after, err)
	}
	if now := workerPIDs(s.nginx, "nginx: worker"); slices.ContainsFunc(now, func(p int) bool { return slices.Contains(pidsA, p) }) {
		t.Errorf("group a's workers %v -> %v: want all new", pidsA, now)
	}
	if now := workerPIDs(nginxB, "nginx: worker"); !noNewWorkers(pidsB, now) {
		t.Errorf("group b's workers %v -> %v: a certificate of group a reloaded group b", pidsB, now)
	}
	c, _ := s.cert("a")
	if len(c.Reloads) != 1 || c.Reloads[0].Container != s.nginx || !c.Reloads[0].OK {
		t.Errorf("reloads of a = %+v, want one proven reload of %s only", c.Reloads, s.nginx)
	}

	// The app moves to group b (labels change by recreating the container):
	// b's nginx, which has a server for it, is reloaded and proven to serve
	// the same certificate; nothing is ordered.
	obtained := strings.Count(s.logs(), "certificate obtained and written")
	if out, err := docker("rm", "-f", "e2e-"+runID+"-groups-app-a"); err != nil {
		t.Fatal(out)
	}
	s.writeConfIn("conf-b", "10-a.conf", tlsServer("a", da))
	pidsB = workerPIDs(nginxB, "nginx: worker")
	s.startApp("app-a", map[string]string{"domains": da, "name": "a", "proxy": "b"})
	if err := waitUntil(60*time.Second, func() error {
		leaf, err := verifiedAt(ipB, roots, da)
		if err != nil {
			return err
		}
		if serialOf(leaf) != serialOf(after) {
			return errString("b serves " + serialOf(leaf) + " for a")
		}
		return nil
	}); err != nil {
		t.Fatalf("after moving to group b, b's nginx never served a's certificate: %v", err)
	}
	s.waitDeployed("a")
	if now := workerPIDs(nginxB, "nginx: worker"); slices.ContainsFunc(now, func(p int) bool { return slices.Contains(pidsB, p) }) {
		t.Errorf("group b's workers %v -> %v: want all new", pidsB, now)
	}
	if c, _ := s.cert("a"); len(c.Reloads) == 0 || c.Reloads[0].Container != nginxB || !c.Reloads[0].OK {
		t.Errorf("reloads of a = %+v, want a proven reload of %s", c.Reloads, nginxB)
	}
	if n := strings.Count(s.logs(), "certificate obtained and written"); n != obtained {
		t.Errorf("%d orders for a change of group, want none", n-obtained)
	}
}

// TestTwentyAtOnce: twenty certificates renewed at once cause a handful of
// reloads of the one nginx, each of them proven.
func TestTwentyAtOnce(t *testing.T) {
	t.Parallel()
	if _, err := startPebble("pebble-twenty"); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "twenty")
	s.pebble = "pebble-twenty"
	var names, domains []string
	for i := range 20 {
		names = append(names, "c"+strconv.Itoa(i))
		domains = append(domains, s.domain("c"+strconv.Itoa(i)))
	}
	s.point(domains...)
	s.startNginx()
	s.startEdgecert("EDGECERT_MAX_ORDERS=20")
	roots := caRoots(t, s.pebble)
	for i, d := range domains {
		s.writeConf("10-"+names[i]+".conf", tlsServer(names[i], d))
	}
	var wg sync.WaitGroup
	for i, d := range domains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.startApp("app"+names[i], map[string]string{"domains": d, "name": names[i]})
		}()
	}
	wg.Wait()
	first := map[string]string{}
	if err := waitUntil(3*time.Minute, func() error {
		for _, d := range domains {
			leaf, err := s.verified(roots, d)
			if err != nil {
				return err
			}
			first[d] = serialOf(leaf)
		}
		return nil
	}); err != nil {
		t.Fatalf("not every certificate was served: %v", err)
	}
	s.waitDeployed(names...)
	issueReloads := strings.Count(s.logs(), "reload proven")

	out, code := s.renewRecovering(&roots, append([]string{"--force"}, names...)...)
	if code != 0 {
		t.Fatalf("renew --force of 20: exit %d:\n%s", code, out)
	}
	for _, d := range domains {
		leaf, err := s.verified(roots, d)
		if err != nil || serialOf(leaf) == first[d] {
			t.Fatalf("%s serves %v, %v after the renewal; want a new certificate", d, leaf, err)
		}
	}
	for _, c := range s.status().Certificates {
		if !c.Deployed || c.State != "valid" {
			t.Errorf("%s: %s, deployed %v; want valid and proven", c.Name, c.State, c.Deployed)
		}
	}
	logs := s.logs()
	renewReloads := strings.Count(logs, "reload proven") - issueReloads
	renewed := logTimes(logs, "certificate obtained and written", "reason=forced") // a retried one too
	// On 2 busy cores, 20 orders complete over 1-4 s.
	span, limit := reloadLimit(renewed)
	t.Logf("MEASURE twenty issue_reloads=%d renew_reloads=%d completion_span=%v renewed=%d", issueReloads, renewReloads, span.Round(time.Millisecond), len(renewed))
	if renewReloads < 1 || renewReloads > limit || renewReloads > 10 {
		t.Errorf("%d reloads for 20 certificates renewed at once, completed over %v: want 1 to %d (one per bound of completions, plus the last), never one per certificate", renewReloads, span, limit)
	}
}

// TestApache: an Apache httpd container, labelled with its signal (USR1),
// config test and worker pattern, is reloaded and proven like nginx.
func TestApache(t *testing.T) {
	t.Parallel()
	s := newStack(t, "apache")
	d := s.domain("site")
	s.point(d)
	apache := s.nginx + "-httpd"
	s.startProxy(proxySpec{name: apache, ip: s.ip, image: "edgecert-apache:e2e", conf: "conf-apache",
		labels: map[string]string{"nginx": "true", "signal": "USR1", "config_test": "apache2 -t", "workers": "apache2"}})
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	s.writeConfIn("conf-apache", "10-site.conf", fmt.Sprintf(`Listen 443
<VirtualHost *:443>
    ServerName %s
    SSLEngine on
    SSLCertificateFile    /etc/apache2/certs/site/fullchain.pem
    SSLCertificateKeyFile /etc/apache2/certs/site/privkey.pem
</VirtualHost>
`, d))
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	first := s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")

	pids := workerPIDs(apache, "apache2")
	if out, code := s.renew("--force", "site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force: exit %d:\n%s", code, out)
	}
	leaf, err := s.verified(roots, d)
	if err != nil || serialOf(leaf) == first {
		t.Fatalf("Apache serves %v, %v; want a new certificate", leaf, err)
	}
	if now := workerPIDs(apache, "apache2"); len(now) == 0 || slices.ContainsFunc(now, func(p int) bool { return slices.Contains(pids, p) }) {
		t.Errorf("Apache's children %v -> %v: want all new", pids, now)
	}
	c, _ := s.cert("site")
	if len(c.Reloads) != 1 || !c.Reloads[0].OK || !hasStep(c.Reloads[0], "signal", "USR1") || !hasStep(c.Reloads[0], "config_test", "Syntax OK") {
		t.Errorf("reloads = %+v, want a proven USR1 reload after `apache2 -t`", c.Reloads)
	}
}

// TestWrongCertificateFile: nginx accepts its config and reloads, but the
// server block points at another certificate's files: the handshake step
// catches it within a second (waiting cannot mend a configuration), and
// status says what nginx presented, as a hint, without failing y.
func TestWrongCertificateFile(t *testing.T) {
	t.Parallel()
	s := newStack(t, "wrongfile")
	dx, dy := s.domain("x"), s.domain("y")
	s.point(dx, dy)
	s.startNginx()
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	s.writeConf("10-y.conf", tlsServer("y", dy))
	s.writeConf("10-x.conf", tlsServer("y", dx)) // the mistake: x's server uses y's files
	s.startApp("app-y", map[string]string{"domains": dy, "name": "y"})
	s.startApp("app-x", map[string]string{"domains": dx, "name": "x"})
	if err := waitUntil(150*time.Second, func() error { _, err := s.verified(roots, dy); return err }); err != nil {
		t.Fatalf("y was never served: %v", err)
	}
	var c certView
	if err := waitUntil(150*time.Second, func() error {
		c, _ = s.cert("x")
		if c.Hint == "" {
			return errString(fmt.Sprintf("x: %s, no hint yet, reloads %+v", c.State, c.Reloads))
		}
		return nil
	}); err != nil {
		t.Fatalf("the wrong file was not caught by the handshake step: %v", err)
	}
	y0, _ := s.cert("y")
	shook := false
	for _, r := range c.Reloads {
		for _, st := range r.Steps {
			shook = shook || st.Step == "handshake" && !st.OK && strings.Contains(st.Detail, "has no server for "+dx)
		}
	}
	if !strings.Contains(c.Hint, "it presented a certificate for "+dy+" (serial "+y0.Serial+")") || c.Deployed || !shook {
		t.Errorf("x = %+v, want not deployed, a hint naming y's certificate and serial, and the handshake in its reload", c)
	}
	if y, _ := s.cert("y"); !y.Deployed || y.DeployError != "" {
		t.Errorf("y = %+v, want proven: x's problem is x's alone", y)
	}
}

const httpServer = `server {
    listen 80 default_server;
    location ^~ /.well-known/acme-challenge/ { root /var/www/acme; default_type text/plain; }
    location / { return 301 https://$host$request_uri; }
}
`

// pointAt makes the test DNS answer domains with ip.
func pointAt(t *testing.T, ip string, domains ...string) {
	t.Helper()
	for _, d := range domains {
		if _, err := challPost("/add-a", map[string]any{"host": d, "addresses": []string{ip}}); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *stack) writeConfIn(dir, file, text string) {
	s.t.Helper()
	if err := os.MkdirAll(filepath.Join(s.dir, dir), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, dir, file), []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// waitDeployed waits until status shows every named certificate proven served.
func (s *stack) waitDeployed(names ...string) {
	s.t.Helper()
	if err := waitUntil(30*time.Second, func() error {
		for _, n := range names {
			if c, _ := s.cert(n); !c.Deployed {
				return errString(n + " not proven yet: " + c.State + " " + c.DeployError)
			}
		}
		return nil
	}); err != nil {
		s.t.Fatal(err)
	}
}

func hasStep(r reload, name, detail string) bool {
	for _, st := range r.Steps {
		if st.Step == name && st.OK && strings.Contains(st.Detail, detail) {
			return true
		}
	}
	return false
}

// TestUnprivilegedNginx: nginx whose master process runs as uid 101, as the
// nginx-unprivileged image's does, cannot read a root-owned 0600 key: the
// reload fails at its config test, loudly, with nginx's "Permission denied",
// and nginx keeps running. With EDGECERT_KEY_OWNER=101:101 (edgecert
// recreated) the keys on the volume are handed over at start and the
// pending reload is proven without a new order; later keys are born 101's.
func TestUnprivilegedNginx(t *testing.T) {
	t.Parallel()
	s := newStack(t, "unpriv")
	d := s.domain("site")
	s.point(d)
	s.startProxy(proxySpec{name: s.nginx, ip: s.ip, conf: "conf", labels: map[string]string{"nginx": "true"}, args: []string{
		"--user", "101:101", "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
		"--tmpfs", "/run:uid=101,gid=101", "--tmpfs", "/var/lib/nginx:uid=101,gid=101"}})
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", d))
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	var c certView
	if err := waitUntil(150*time.Second, func() error {
		c, _ = s.cert("site")
		if !strings.Contains(c.DeployError, "Permission denied") {
			return errString("no permission error yet: " + c.State + " " + c.DeployError)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c.State != "failing" || len(c.Reloads) == 0 || c.Reloads[0].FailedStep != "config_test" {
		t.Fatalf("status = %+v, want failing at config_test", c)
	}
	keyOwner := func() (int, int, os.FileMode) {
		fi, err := os.Stat(filepath.Join(s.dir, "certs", "site", "privkey.pem"))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid), fi.Mode().Perm()
	}

	if out, err := docker("rm", "-f", s.edgecert); err != nil {
		t.Fatal(out)
	}
	s.startEdgecert("EDGECERT_KEY_OWNER=101:101")
	leaf := s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")
	if leaf != c.Serial {
		t.Errorf("served %s, want the certificate already on the volume (%s): no new order", leaf, c.Serial)
	}
	if u, g, m := keyOwner(); u != 101 || g != 101 || m != 0o600 {
		t.Errorf("key on the volume: %d:%d %o, want 101:101 0600", u, g, m)
	}
	logs := s.logs()
	if !strings.Contains(logs, "private keys given to EDGECERT_KEY_OWNER") || strings.Contains(logs, "certificate obtained") {
		t.Errorf("want the keys handed over at start and no order:\n%s", logs)
	}

	if out, code := s.renew("--force", "site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force: exit %d:\n%s", code, out)
	}
	if u, g, m := keyOwner(); u != 101 || g != 101 || m != 0o600 {
		t.Errorf("new key: %d:%d %o, want 101:101 0600", u, g, m)
	}
}

// TestMissingCertificateHint: nginx's config names certificate files that
// are not there. When no container asks for that certificate, or when
// edgecert has it but the proxy mounts the volume elsewhere, the failed
// reload says which, beside nginx's own message; once the config is right,
// `renew NAME` proves the pending reload.
func TestMissingCertificateHint(t *testing.T) {
	t.Parallel()
	s := newStack(t, "hint")
	d := s.domain("site")
	roots := s.up("site", d)
	s.writeConf("20-ghost.conf", tlsServer("ghost", s.domain("ghost")))
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	if err := waitUntil(150*time.Second, func() error {
		c, _ := s.cert("site")
		if !strings.Contains(c.DeployError, `names certificate "ghost"`) {
			return errString("no hint yet: " + c.State + " " + c.DeployError)
		}
		if !strings.Contains(c.DeployError, "no running container asks for") || !strings.Contains(c.DeployError, "/etc/nginx/certs/ghost/fullchain.pem") {
			return errString("hint incomplete: " + c.DeployError)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(filepath.Join(s.dir, "conf", "20-ghost.conf")); err != nil {
		t.Fatal(err)
	}
	s.writeConf("20-mount.conf", strings.ReplaceAll(tlsServer("site", s.domain("other")), "/etc/nginx/certs/", "/etc/nginx/wrong/"))
	out, code := s.renew("site")
	if code != 1 || !strings.Contains(out, `edgecert has certificate "site"`) || !strings.Contains(out, "mount the certificate volume at /etc/nginx/wrong") {
		t.Fatalf("renew with the volume named at the wrong path: exit %d, want 1 and a hint about the mount:\n%s", code, out)
	}

	if err := os.Remove(filepath.Join(s.dir, "conf", "20-mount.conf")); err != nil {
		t.Fatal(err)
	}
	if out, code := s.renew("site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew after the fix: exit %d:\n%s", code, out)
	}
	if _, err := s.verified(roots, d); err != nil {
		t.Fatalf("after the fix nginx does not serve the certificate: %v", err)
	}
}

// TestHAProxy: Debian's HAProxy in master-worker mode, labelled for USR2, its
// config test and combined.pem, terminates TLS with the certificate; it
// serves no files, so HTTP-01 tokens go through it to a file server. Issued,
// renewed and each reload proven like nginx's.
func TestHAProxy(t *testing.T) {
	t.Parallel()
	s := newStack(t, "lb")
	d := s.domain("site")
	s.point(d)
	files := newIP()
	if out, err := docker(append(append([]string{"run", "-d", "--name", s.nginx + "-files", "--network", s.netName(), "--ip", files,
		"-v", filepath.Join(s.dir, "acme") + ":/var/www/acme:ro"}, s.labels()...), "edgecert-testapp:e2e", "/testapp", "files", "/var/www/acme")...); err != nil {
		t.Fatalf("start the challenge file server: %s", out)
	}
	s.writeConfIn("conf-haproxy", "haproxy.cfg", fmt.Sprintf(`global
    log stdout format raw local0 notice
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http
    bind :80
    use_backend tokens if { path_beg /.well-known/acme-challenge/ }
    http-request return status 404 unless { path_beg /.well-known/acme-challenge/ }
frontend https
    bind :443 ssl crt /etc/haproxy/certs/site/combined.pem
    http-request return status 200 content-type text/plain string "served by haproxy"
backend tokens
    server files %s:8080
`, files))
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	// HAProxy cannot start before its crt exists: it restarts (orders wait
	// meanwhile) until the app's placeholder brings combined.pem.
	haproxy := s.nginx + "-haproxy"
	config := "haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg"
	s.startProxy(proxySpec{name: haproxy, ip: s.ip, image: "edgecert-haproxy:e2e", conf: "conf-haproxy", noWait: true,
		labels: map[string]string{"nginx": "true", "signal": "USR2", "config_test": config, "workers": "haproxy", "combined_pem": "true"}})
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	if err := waitUntil(60*time.Second, func() error {
		if len(workerPIDs(haproxy, "haproxy")) == 0 {
			return errString("no HAProxy worker yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	first := s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")

	combined := filepath.Join(s.dir, "certs", "site", "combined.pem")
	data, err := os.ReadFile(combined)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(combined); fi.Mode().Perm() != 0o600 {
		t.Errorf("combined.pem has mode %v, want 0600", fi.Mode().Perm())
	}
	if pair, err := tls.X509KeyPair(data, data); err != nil || serialOf(mustLeaf(t, pair)) != first {
		t.Errorf("combined.pem is not the served certificate %s with its key: %v", first, err)
	}

	pids := workerPIDs(haproxy, "haproxy")
	if out, code := s.renew("--force", "site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force: exit %d:\n%s", code, out)
	}
	leaf, err := s.verified(roots, d)
	if err != nil || serialOf(leaf) == first {
		t.Fatalf("HAProxy serves %v, %v; want a new certificate", leaf, err)
	}
	if now := workerPIDs(haproxy, "haproxy"); len(now) == 0 || slices.ContainsFunc(now, func(p int) bool { return slices.Contains(pids, p) }) {
		t.Errorf("HAProxy's workers %v -> %v: want all new", pids, now)
	}
	c, _ := s.cert("site")
	if len(c.Reloads) != 1 || !c.Reloads[0].OK || !hasStep(c.Reloads[0], "signal", "USR2") || !hasStep(c.Reloads[0], "config_test", "Configuration file is valid") {
		t.Errorf("reloads = %+v, want a proven USR2 reload after `%s`", c.Reloads, config)
	}
}

func mustLeaf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
