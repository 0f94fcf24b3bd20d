package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCompanion: coming from acme-companion. The app says LETSENCRYPT_HOST in
// its environment (no edgecert label), the proxy carries nginx-proxy's label,
// and nginx reads the flat <domain>.crt/.key layout: edgecert serves it all.
func TestCompanion(t *testing.T) {
	t.Parallel()
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
}
