package e2e

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCompanion: coming from acme-companion. The app says LETSENCRYPT_HOST in
// its environment (no edgecert label), the proxy carries nginx-proxy's label,
// and nginx reads the flat <domain>.crt/.key layout: edgecert serves it all.
func TestCompanion(t *testing.T) {
	t.Parallel()
	companionOnly(t)
	s := newStack(t, "companion")
	d := s.domain("blog")
	s.point(d)
	s.startProxy(proxySpec{name: s.nginx, ip: s.ip, conf: "conf", raw: map[string]string{"com.github.nginx-proxy.nginx": ""}})
	s.startEdgecert("EDGECERT_ACME_COMPANION=true", "EDGECERT_FLAT_LINKS=true")
	roots := caRoots(t, s.pebble)
	// nginx-proxy's generated server block reads the flat layout.
	s.writeConf("10-blog.conf", `server {
    listen 443 ssl;
    server_name `+d+`;
    ssl_certificate     /etc/nginx/certs/`+d+`.crt;
    ssl_certificate_key /etc/nginx/certs/`+d+`.key;
    location / { return 200 "ok\n"; }
}
`)
	app := "e2e-" + runID + "-companion-blog"
	runArgs := append([]string{"run", "-d", "--name", app, "--network", s.netName(),
		"-e", "VIRTUAL_HOST=" + d, "-e", "LETSENCRYPT_HOST=" + d, "-e", "LETSENCRYPT_EMAIL=owner@companion.test"}, s.labels()...)
	if out, err := docker(append(runArgs, "edgecert-testapp:e2e")...); err != nil {
		t.Fatal(out)
	}
	if err := waitUntil(150*time.Second, func() error { _, err := s.verified(roots, d); return err }); err != nil {
		t.Fatalf("the acme-companion style app was never served: %v", err)
	}
	s.waitDeployed(d)
	c, _ := s.cert(d)
	if c.Name != d || len(c.Reloads) != 1 || c.Reloads[0].Container != s.nginx || !hasStep(c.Reloads[0], "signal", "nginx -s reload") {
		t.Errorf("status = %+v, want %s named after its first domain, proven on the nginx-proxy container through nginx -s reload", c, d)
	}
	for suffix, want := range map[string]string{".crt": d + "/fullchain.pem", ".key": d + "/privkey.pem", ".chain.pem": d + "/chain.pem"} {
		if got, err := os.Readlink(filepath.Join(s.dir, "certs", d+suffix)); err != nil || got != want {
			t.Errorf("flat link %s%s -> %q, %v; want %q", d, suffix, got, err, want)
		}
	}
	if lines := grepLines(s.logs(), "email=owner@companion.test"); len(lines) == 0 {
		t.Errorf("no ACME account was registered for LETSENCRYPT_EMAIL")
	}

	// ACME_SINGLE_DOMAIN_CERTS=true: a certificate for each name, each
	// served through its own flat links.
	shop, www := s.domain("shop"), s.domain("www")
	s.point(shop, www)
	for _, n := range []string{shop, www} {
		s.writeConf("20-"+n+".conf", "server {\n    listen 443 ssl;\n    server_name "+n+";\n    ssl_certificate     /etc/nginx/certs/"+n+
			".crt;\n    ssl_certificate_key /etc/nginx/certs/"+n+".key;\n    location / { return 200 \"ok\\n\"; }\n}\n")
	}
	runArgs = append([]string{"run", "-d", "--name", app + "-shop", "--network", s.netName(),
		"-e", "VIRTUAL_HOST=" + shop + "," + www, "-e", "ACME_HOST=" + shop + "," + www, "-e", "ACME_SINGLE_DOMAIN_CERTS=true"}, s.labels()...)
	if out, err := docker(append(runArgs, "edgecert-testapp:e2e")...); err != nil {
		t.Fatal(out)
	}
	leaves := map[string]*x509.Certificate{}
	if err := waitUntil(150*time.Second, func() error {
		for _, n := range []string{shop, www} {
			leaf, err := s.verified(roots, n)
			if err != nil {
				return err
			}
			leaves[n] = leaf
		}
		return nil
	}); err != nil {
		t.Fatalf("the single-domain certificates were never served: %v", err)
	}
	for n, leaf := range leaves {
		if !slices.Equal(leaf.DNSNames, []string{n}) {
			t.Errorf("%s is served a certificate for %v, want one for %s alone", n, leaf.DNSNames, n)
		}
		if c, ok := s.cert(n); !ok || c.Name != n {
			t.Errorf("status has no certificate named %s (%+v)", n, c)
		}
	}
}

// TestCompanionImport: the move from acme-companion orders nothing. A volume
// laid out as acme-companion leaves it (a real directory per certificate with
// key.pem, and the flat links) is imported by a fresh edgecert: the CA
// receives no new order, and nginx, restarted on edgecert's volume, serves
// the same certificates through the flat links.
func TestCompanionImport(t *testing.T) {
	t.Parallel()
	companionOnly(t)
	pebble, err := startPebble("pebble-import")
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "import")
	s.pebble = "pebble-import"
	shop, www, blog := s.domain("shop"), s.domain("www"), s.domain("blog")
	s.point(shop, www, blog)
	s.startProxy(proxySpec{name: s.nginx, ip: s.ip, conf: "conf", raw: map[string]string{"com.github.nginx-proxy.nginx": ""}})
	companion := []string{"EDGECERT_ACME_COMPANION=true", "EDGECERT_FLAT_LINKS=true"}
	s.startEdgecert(companion...)
	roots := caRoots(t, s.pebble)
	for _, d := range []string{shop, www, blog} {
		s.writeConf("10-"+d+".conf", "server {\n    listen 443 ssl;\n    server_name "+d+";\n    ssl_certificate     /etc/nginx/certs/"+d+
			".crt;\n    ssl_certificate_key /etc/nginx/certs/"+d+".key;\n    location / { return 200 \"ok\\n\"; }\n}\n")
	}
	for name, hosts := range map[string]string{"shop": shop + "," + www, "blog": blog} {
		args := append([]string{"run", "-d", "--name", "e2e-" + runID + "-import-" + name, "--network", s.netName(),
			"-e", "LETSENCRYPT_HOST=" + hosts}, s.labels()...)
		if out, err := docker(append(args, "edgecert-testapp:e2e")...); err != nil {
			t.Fatal(out)
		}
	}
	served := map[string]string{}
	if err := waitUntil(150*time.Second, func() error {
		for _, d := range []string{shop, www, blog} {
			leaf, err := s.verified(roots, d)
			if err != nil {
				return err
			}
			served[d] = serialOf(leaf)
		}
		return nil
	}); err != nil {
		t.Fatalf("not served before the move: %v", err)
	}
	s.waitDeployed(shop, blog)

	// acme-companion's volume, from those certificates: <first domain>/ with
	// cert.pem, chain.pem, fullchain.pem, key.pem and .companion, and the
	// flat links beside.
	old := filepath.Join(s.dir, "companion-certs")
	for name, domains := range map[string][]string{shop: {shop, www}, blog: {blog}} {
		dir := filepath.Join(old, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for from, to := range map[string]string{"fullchain.pem": "fullchain.pem", "cert.pem": "cert.pem", "chain.pem": "chain.pem", "privkey.pem": "key.pem"} {
			data, err := os.ReadFile(filepath.Join(s.dir, "certs", name, from))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, to), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, ".companion"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, d := range domains {
			for suffix, file := range map[string]string{".crt": "fullchain.pem", ".key": "key.pem", ".chain.pem": "chain.pem"} {
				if err := os.Symlink("./"+name+"/"+file, filepath.Join(old, d+suffix)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// The move: a fresh edgecert with empty volumes, the old one mounted.
	if out, err := docker("rm", "-f", s.edgecert); err != nil {
		t.Fatal(out)
	}
	for _, dir := range []string{"certs", "state"} {
		if err := os.RemoveAll(filepath.Join(s.dir, dir)); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(s.dir, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ordersBefore := newOrders(t, pebble)
	s.extraArgs = append(s.extraArgs, "-v", old+":/import/certs:ro")
	s.startEdgecert(append(companion, "EDGECERT_COMPANION_CERTS=/import/certs")...)
	s.waitDeployed(shop, blog)
	if out, err := docker("restart", s.nginx); err != nil { // nginx-proxy on edgecert's volume
		t.Fatal(out)
	}
	if err := waitUntil(60*time.Second, func() error {
		for d, serial := range served {
			leaf, err := s.verified(roots, d)
			if err != nil {
				return err
			}
			if serialOf(leaf) != serial {
				return errString(d + " serves " + serialOf(leaf) + ", want the imported " + serial)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("after the move: %v", err)
	}
	logs := s.logs()
	if n := newOrders(t, pebble) - ordersBefore; n != 0 || strings.Contains(logs, "ordering certificate") {
		t.Errorf("%d new orders at the CA after the import (edgecert's log orders: %v); want none", n, grepLines(logs, "ordering certificate"))
	}
	for _, name := range []string{shop, blog} {
		c, _ := s.cert(name)
		if c.State != "valid" || c.Serial != served[name] || len(c.History) == 0 || c.History[0].Kind != "imported" {
			t.Errorf("%s after the import: state %s serial %s history %+v; want valid, %s, imported", name, c.State, c.Serial, c.History, served[name])
		}
	}
	if got, err := os.Readlink(filepath.Join(s.dir, "certs", www+".crt")); err != nil || got != shop+"/fullchain.pem" {
		t.Errorf("flat link %s.crt -> %q, %v; want %s/fullchain.pem", www, got, err, shop)
	}
}

// companionMu: acme-companion mode reads every container of the engine (the
// nginx-proxy label and LETSENCRYPT_HOST know no label prefix), as it does on
// a user's host, so the tests that use it run one at a time.
var companionMu sync.Mutex

// companionOnly holds companionMu until the test and its stack's teardown
// are over (the first cleanup registered runs last).
func companionOnly(t *testing.T) {
	companionMu.Lock()
	t.Cleanup(companionMu.Unlock)
}
