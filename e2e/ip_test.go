package e2e

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIPAddressCertificates: certificates for IP addresses (RFC 8738), as
// Let's Encrypt issues them: an app labelled with nginx's IPv4 address gets
// a certificate with that address as its only SAN and no subject CN, under
// the CA's short-lived profile (nobody set one), validated over HTTP-01 at
// the address, served by nginx's default server and proven by a handshake
// to the address without SNI; it renews by itself at half its lifetime. A
// second certificate mixes a name and nginx's IPv6 address, on a dual-stack
// network. Every order the CA created issued a certificate.
func TestIPAddressCertificates(t *testing.T) {
	t.Parallel()
	s := newStack(t, "ipaddr")
	s.pebble = "pebble-ip"
	pebble, err := startPebble(s.pebble)
	if err != nil {
		t.Fatal(err)
	}

	// A dual-stack network beside the suite's: nginx, Pebble and edgecert
	// on it too, nginx at a fixed IPv6 address.
	n := strings.TrimPrefix(subnet, "10.231.")
	v6net, v6 := "e2e-"+runID+"-v6", ""
	if out, err := docker("network", "create", "--label", "edgecert-e2e="+runID, "--ipv6", "--subnet", "fd42:e2e:"+n+"::/64",
		"--subnet", "10.232."+n+".0/24", v6net); err != nil {
		t.Logf("no IPv6 network on this engine (%s): the IPv6 certificate is not tried", strings.TrimSpace(out))
		v6net = ""
	} else {
		t.Cleanup(func() { docker("network", "rm", v6net) })
		v6 = "fd42:e2e:" + n + "::10"
		s.alsoOn = []string{v6net}
		if out, err := docker("network", "connect", v6net, pebble); err != nil {
			t.Fatalf("connect Pebble to the IPv6 network: %s", out)
		}
	}
	v4 := s.ip
	s.writeConf("00-http.conf", `server {
    listen 80 default_server;
    listen [::]:80 default_server;
    location ^~ /.well-known/acme-challenge/ { root /var/www/acme; default_type text/plain; }
    location / { return 301 https://$host$request_uri; }
}
`)
	s.startNginx()
	if v6net != "" {
		if out, err := docker("network", "connect", "--ip6", v6, v6net, s.nginx); err != nil {
			t.Fatalf("connect nginx to the IPv6 network: %s", out)
		}
	}
	s.startEdgecert()
	roots := caRoots(t, s.pebble)

	// The address's certificate is the default server of IPv4's port 443:
	// a client reaching nginx by its address sends no SNI.
	s.writeConf("10-ip.conf", fmt.Sprintf(`server {
    listen 443 ssl default_server;
    server_name _;
    ssl_certificate     /etc/nginx/certs/%s/fullchain.pem;
    ssl_certificate_key /etc/nginx/certs/%s/privkey.pem;
    location / { return 200 "ip\n"; }
}
`, v4, v4))
	s.startApp("ip", map[string]string{"domains": v4})
	mixed := s.domain("mixed")
	if v6net != "" {
		// The name and the IPv6 address: the name by SNI on both
		// families, the address as IPv6's default server.
		s.point(mixed)
		s.writeConf("10-mixed.conf", fmt.Sprintf(`server {
    listen 443 ssl;
    listen [::]:443 ssl default_server;
    server_name %s;
    ssl_certificate     /etc/nginx/certs/%s/fullchain.pem;
    ssl_certificate_key /etc/nginx/certs/%s/privkey.pem;
    location / { return 200 "mixed\n"; }
}
`, mixed, mixed, mixed))
		s.startApp("mixed", map[string]string{"domains": mixed + "," + v6})
	}

	leaf := waitAddressServed(t, roots, v4, v4, 90*time.Second)
	if leaf.Subject.CommonName != "" || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != v4 {
		t.Fatalf("the address's certificate: CN %q, DNS names %v, IP addresses %v; want no CN, no names, %s", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses, v4)
	}
	// The e2e Pebble's short-lived profile lasts 2 minutes (its default, 90 days).
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 5*time.Minute {
		t.Fatalf("the address's certificate lasts %s: not the CA's short-lived profile", life)
	}
	// Proven by edgecert too: its handshake may come a moment after the
	// leaf is served (a reload for the other certificate loaded it while
	// this one's first reload had met that one's files not yet written).
	s.waitDeployed(v4)
	c, _ := s.cert(v4)
	if c.Profile != "shortlived" || c.Hint != "" {
		t.Fatalf("status of %s: profile %q, hint %q; want shortlived, no hint", v4, c.Profile, c.Hint)
	}
	t.Logf("%s: serial %s, SAN IP %v, no CN, lifetime %s, profile %s", v4, serialOf(leaf), leaf.IPAddresses, leaf.NotAfter.Sub(leaf.NotBefore), c.Profile)

	if v6net != "" {
		m := waitAddressServed(t, roots, v6, v6, 90*time.Second)
		if m.Subject.CommonName != "" || !slices.Equal(m.DNSNames, []string{mixed}) || len(m.IPAddresses) != 1 || m.IPAddresses[0].String() != v6 {
			t.Fatalf("the mixed certificate: CN %q, names %v, addresses %v; want no CN, %s and %s", m.Subject.CommonName, m.DNSNames, m.IPAddresses, mixed, v6)
		}
		if byName, err := s.verified(roots, mixed); err != nil || serialOf(byName) != serialOf(m) {
			t.Fatalf("%s by SNI on IPv4: %v (want serial %s)", mixed, err, serialOf(m))
		}
		s.waitDeployed(mixed)
		mc, _ := s.cert(mixed)
		if mc.Hint != "" {
			t.Fatalf("status of %s: hint %q", mixed, mc.Hint)
		}
		t.Logf("%s: serial %s, SAN DNS %v, SAN IP %v, no CN", mixed, serialOf(m), m.DNSNames, m.IPAddresses)
	}

	// Renewed by itself at half its lifetime, and proven again.
	first := serialOf(leaf)
	var renewed *x509.Certificate
	if err := waitUntil(3*time.Minute, func() error {
		l, err := verifiedAt(v4, roots, v4)
		if err != nil {
			return err
		}
		if serialOf(l) == first {
			return fmt.Errorf("still serial %s", first)
		}
		renewed = l
		return nil
	}); err != nil {
		t.Fatalf("the address's certificate was not renewed: %v", err)
	}
	t.Logf("%s renewed: serial %s after %s", v4, serialOf(renewed), renewed.NotBefore.Sub(leaf.NotBefore).Round(time.Second))

	// Every order the CA created issued a certificate: none lost, none
	// ordered twice for one need. (Counted from the log: status keeps a
	// short history, and these certificates renew every minute or so; an
	// order in flight at one look is issued at the next.)
	var orders, issued int
	if err := waitUntil(30*time.Second, func() error {
		orders, issued = newOrders(t, pebble), strings.Count(s.logs(), "certificate obtained and written")
		if orders != issued {
			return fmt.Errorf("the CA created %d orders, %d certificates were issued", orders, issued)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE ip orders_at_ca=%d issued=%d", orders, issued)
}

// waitAddressServed waits until nginx, reached at ip without SNI, presents
// a certificate that chains to roots and covers addr, and returns it.
func waitAddressServed(t *testing.T, roots *x509.CertPool, ip, addr string, timeout time.Duration) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	if err := waitUntil(timeout, func() error {
		l, err := verifiedAt(ip, roots, addr)
		leaf = l
		return err
	}); err != nil {
		t.Fatalf("%s was never served at %s with a certificate from the CA: %v", addr, net.JoinHostPort(ip, "443"), err)
	}
	return leaf
}
