package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// bindServer is a BIND 9 container, authoritative for the test zones, that
// takes dynamic updates signed with one TSIG key.
type bindServer struct {
	ip, secret string
}

// startBind runs named with the zones (name -> extra records) on the stack's
// network; each zone has its SOA, an NS and the NS's address.
func (s *stack) startBind(zones map[string]string) bindServer {
	s.t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	b := bindServer{ip: newIP(), secret: base64.StdEncoding.EncodeToString(key)}
	dir := filepath.Join(s.dir, "bind")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		s.t.Fatal(err)
	}
	conf := fmt.Sprintf(`options {
    directory "/var/lib/bind";
    listen-on { any; };
    listen-on-v6 { none; };
    allow-query { any; };
    recursion yes;          // as a CA's resolver: a CNAME into another of its zones is followed
    allow-recursion { any; };
    dnssec-validation no;
    pid-file none;
};
controls { };
key "edgecert." { algorithm hmac-sha256; secret "%s"; };
`, b.secret)
	for zone, records := range zones {
		conf += fmt.Sprintf("zone %q { type primary; file %q; update-policy { grant edgecert. zonesub TXT; }; };\n", zone, zone+".zone")
		data := fmt.Sprintf("$TTL 2\n@ IN SOA ns.%s. admin.%s. 1 60 60 600 2\n@ IN NS ns.%s.\nns IN A %s\n%s\n", zone, zone, zone, b.ip, records)
		if err := os.WriteFile(filepath.Join(dir, zone+".zone"), []byte(data), 0o666); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o644); err != nil {
		s.t.Fatal(err)
	}
	args := append([]string{"run", "-d", "--name", s.nginx + "-bind", "--network", s.netName(), "--ip", b.ip,
		"-v", dir + ":/var/lib/bind"}, s.labels()...)
	if out, err := docker(append(args, "edgecert-bind:e2e", "named", "-g", "-c", "/var/lib/bind/named.conf")...); err != nil {
		s.t.Fatalf("start BIND: %s", out)
	}
	if err := waitUntil(20*time.Second, func() error {
		for zone := range zones {
			if _, err := b.query("ns."+zone, dns.TypeA); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		s.t.Fatalf("BIND does not answer: %v", err)
	}
	return b
}

// query asks the server for name's records of type t.
func (b bindServer) query(name string, t uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, b.ip+":53")
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: %s", name, dns.TypeToString[t], dns.RcodeToString[r.Rcode])
	}
	return r.Answer, nil
}

// challengeRecords lists the _acme-challenge TXT records left in a zone.
func (b bindServer) challengeRecords(t *testing.T, names ...string) []string {
	t.Helper()
	var left []string
	for _, n := range names {
		rrs, err := b.query(n, dns.TypeTXT)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range rrs {
			if txt, ok := rr.(*dns.TXT); ok {
				left = append(left, n+" "+strings.Join(txt.Txt, ""))
			}
		}
	}
	return left
}

// TestDNS01: certificates over DNS-01 against a real authoritative server
// (BIND 9, dynamic updates with a TSIG key, lego's rfc2136 provider), with
// Pebble asking that server: a wildcard with its base name, served by nginx
// for two names under it and renewed; a name nginx cannot serve on port 80;
// a name whose _acme-challenge is a CNAME into another zone. After each
// order the zones hold no challenge record.
func TestDNS01(t *testing.T) {
	t.Parallel()
	s := newStack(t, "dns")
	zone := "dns.test"
	b := s.startBind(map[string]string{
		zone:             "_acme-challenge.deleg IN CNAME deleg.delegated.test.\n",
		"delegated.test": "",
	})
	pebble, err := startPebbleDNS("pebble-dns", b.ip+":53")
	if err != nil {
		t.Fatal(err)
	}
	_ = pebble
	s.pebble = "pebble-dns"
	s.startNginx()
	s.startEdgecert("EDGECERT_DNS_PROVIDER=rfc2136", "EDGECERT_DNS_RESOLVERS="+b.ip+":53",
		"RFC2136_NAMESERVER="+b.ip+":53", "RFC2136_TSIG_KEY=edgecert.", "RFC2136_TSIG_SECRET="+b.secret,
		"RFC2136_TSIG_ALGORITHM=hmac-sha256.", "RFC2136_POLLING_INTERVAL=1", "RFC2136_PROPAGATION_TIMEOUT=60", "RFC2136_TTL=2")
	roots := caRoots(t, s.pebble)
	wild, a, bname := "*.wild."+zone, "a.wild."+zone, "b.wild."+zone
	inside, deleg := "inside."+zone, "deleg."+zone
	s.writeConf("10-wild.conf", tlsServer("wild", "wild."+zone, a, bname))
	s.writeConf("10-inside.conf", tlsServer("inside", inside))
	s.writeConf("10-deleg.conf", tlsServer("deleg", deleg))
	s.startApp("wild", map[string]string{"domains": "wild." + zone + "," + wild, "name": "wild"})
	s.startApp("inside", map[string]string{"domains": inside, "name": "inside", "challenge": "dns-01"})
	s.startApp("deleg", map[string]string{"domains": deleg, "name": "deleg", "challenge": "dns-01"})

	first := map[string]string{}
	if err := waitUntil(150*time.Second, func() error {
		for _, d := range []string{a, bname, inside, deleg} {
			leaf, err := s.verified(roots, d)
			if err != nil {
				return err
			}
			first[d] = serialOf(leaf)
		}
		return nil
	}); err != nil {
		t.Fatalf("not served over DNS-01: %v", err)
	}
	if first[a] != first[bname] {
		t.Errorf("a and b are served different certificates (%s, %s); want the one wildcard", first[a], first[bname])
	}
	s.waitDeployed("wild", "inside", "deleg")
	challenges := []string{"_acme-challenge.wild." + zone, "_acme-challenge." + inside, "deleg.delegated.test"}
	if left := b.challengeRecords(t, challenges...); len(left) != 0 {
		t.Errorf("challenge records left in the zones after the orders: %v", left)
	}
	c, _ := s.cert("wild")
	if c.Challenge != "dns-01" || len(c.History) == 0 || !strings.Contains(c.History[0].Detail, "dns-01 through rfc2136") {
		t.Errorf("status of wild: challenge %q, history %+v; want dns-01 named", c.Challenge, c.History)
	}
	if logs := s.logs(); strings.Contains(logs, b.secret) {
		t.Errorf("the TSIG secret is in edgecert's log")
	}

	if out, code := s.renew("--dry-run", "inside"); code != 0 || !strings.Contains(out, "dry run succeeded") {
		t.Errorf("renew --dry-run of a DNS-01 certificate: exit %d:\n%s", code, out)
	}
	if out, code := s.renew("--force", "wild"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force wild: exit %d:\n%s", code, out)
	}
	leaf, err := s.verified(roots, a)
	if err != nil || serialOf(leaf) == first[a] {
		t.Errorf("after renew --force, %s serves %v, %v; want a new certificate", a, leaf, err)
	}
	if left := b.challengeRecords(t, challenges...); len(left) != 0 {
		t.Errorf("challenge records left after the renewal: %v", left)
	}
}

// TestDNS01WrongKeyThenTen: with a wrong TSIG key the order fails once with
// a clear error and waits on the slow schedule (credentials do not mend by
// themselves); edgecert recreated with the right key issues at once, with
// no storm of orders; then ten DNS-01 certificates at once.
func TestDNS01WrongKeyThenTen(t *testing.T) {
	t.Parallel()
	s := newStack(t, "dnskey")
	zone := "dnskey.test"
	b := s.startBind(map[string]string{zone: ""})
	if _, err := startPebbleDNS("pebble-dnskey", b.ip+":53"); err != nil {
		t.Fatal(err)
	}
	s.pebble = "pebble-dnskey"
	s.startNginx()
	env := func(secret string) []string {
		return []string{"EDGECERT_DNS_PROVIDER=rfc2136", "EDGECERT_DNS_RESOLVERS=" + b.ip + ":53", "RFC2136_NAMESERVER=" + b.ip + ":53",
			"RFC2136_TSIG_KEY=edgecert.", "RFC2136_TSIG_SECRET=" + secret, "RFC2136_TSIG_ALGORITHM=hmac-sha256.",
			"RFC2136_POLLING_INTERVAL=1", "RFC2136_PROPAGATION_TIMEOUT=60", "RFC2136_TTL=2"}
	}
	wrong := base64.StdEncoding.EncodeToString([]byte("not the key BIND knows, not at all"))
	s.startEdgecert(env(wrong)...)
	roots := caRoots(t, s.pebble)
	x := "x." + zone
	s.writeConf("10-x.conf", tlsServer("x", x))
	s.startApp("x", map[string]string{"domains": x, "name": "x", "challenge": "dns-01"})

	var c certView
	if err := waitUntil(60*time.Second, func() error {
		c, _ = s.cert("x")
		if c.State != "failing" {
			return errString("state " + c.State)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.LastError, "DNS provider") || time.Until(c.NextRetry) < 5*time.Minute || c.Failures != 1 {
		t.Errorf("with a wrong key: last error %q, next retry in %v, failures %d; want the provider named and the slow schedule (about 10 min)",
			c.LastError, time.Until(c.NextRetry).Round(time.Second), c.Failures)
	}
	if strings.Contains(s.logs(), wrong) || strings.Contains(c.LastError, wrong) {
		t.Errorf("the TSIG secret is in the log or status")
	}

	// The fix: edgecert recreated with the right key orders at once, once.
	if out, err := docker("rm", "-f", s.edgecert); err != nil {
		t.Fatal(out)
	}
	s.startEdgecert(env(b.secret)...)
	start := time.Now()
	if err := waitUntil(90*time.Second, func() error { _, err := s.verified(roots, x); return err }); err != nil {
		t.Fatalf("not issued after the key was fixed: %v", err)
	}
	if n := strings.Count(s.logs(), "ordering certificate"); n != 1 {
		t.Errorf("%d orders after the fix, want 1", n)
	}
	t.Logf("MEASURE dns01_one after_fix_ms=%d", time.Since(start).Milliseconds())

	// Ten at once.
	var names []string
	for i := range 10 {
		d := fmt.Sprintf("t%d.%s", i, zone)
		names = append(names, d)
		s.writeConf(fmt.Sprintf("20-t%d.conf", i), tlsServer(fmt.Sprintf("t%d", i), d))
	}
	start = time.Now()
	for i, d := range names {
		s.startApp(fmt.Sprintf("t%d", i), map[string]string{"domains": d, "name": fmt.Sprintf("t%d", i), "challenge": "dns-01"})
	}
	if err := waitUntil(150*time.Second, func() error {
		for _, d := range names {
			if _, err := s.verified(roots, d); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("ten DNS-01 certificates: %v", err)
	}
	took := time.Since(start)
	var records []string
	for _, d := range names {
		records = append(records, "_acme-challenge."+d)
	}
	if left := b.challengeRecords(t, records...); len(left) != 0 {
		t.Errorf("challenge records left: %v", left)
	}
	t.Logf("MEASURE dns01_ten all_served_ms=%d orders=%d", took.Milliseconds(), strings.Count(s.logs(), "ordering certificate")-1)
}
