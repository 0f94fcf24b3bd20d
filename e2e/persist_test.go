package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDNSPersist01: DNS-PERSIST-01 against BIND 9 and Pebble, with no DNS
// provider configured on edgecert. A certificate for a name and its
// wildcard waits, with no order at the CA, while its record is missing,
// and status says what to set; `edgecert dns-record` prints that record;
// the test (the operator) sets it once; the next order is the only one,
// and edgecert writes nothing to DNS.
func TestDNSPersist01(t *testing.T) {
	t.Parallel()
	s := newStack(t, "persist")
	zone := "persist.test"
	b := s.startBind(map[string]string{zone: ""})
	pebble, err := startPebbleDNS("pebble-persist", b.ip+":53")
	if err != nil {
		t.Fatal(err)
	}
	s.pebble = "pebble-persist"
	s.startNginx()
	s.startEdgecert("EDGECERT_DNS_RESOLVERS=" + b.ip + ":53") // and no EDGECERT_DNS_PROVIDER
	roots := caRoots(t, s.pebble)
	a := "a." + zone
	s.writeConf("10-persist.conf", tlsServer("persist", zone, a))
	s.startApp("persist", map[string]string{"domains": zone + ",*." + zone, "name": "persist", "challenge": "dns-persist-01"})

	// No record: a problem that names the record, and no order.
	owner := "_validation-persist." + zone
	var c certView
	if err := waitUntil(60*time.Second, func() error {
		c, _ = s.cert("persist")
		if !strings.Contains(c.LastError, "dns-persist-01 record not in place (no order placed)") || !strings.Contains(c.LastError, owner+". IN TXT") {
			return fmt.Errorf("status of persist: state %q, last error %q", c.State, c.LastError)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if retry := time.Until(c.NextRetry); retry > 11*time.Minute {
		t.Errorf("a missing record is checked again in %s; want 10 minutes at most", retry.Round(time.Second))
	}
	missing := newOrders(t, pebble)
	if missing != 0 {
		t.Fatalf("the CA created %d orders while the record was missing, want 0", missing)
	}
	t.Logf("status while the record is missing: %s", c.LastError)

	// The record, as edgecert prints it, set by the operator, once.
	out, code := s.cli("dns-record", "persist")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(owner) + `\. IN TXT "([^"]+)"$`).FindStringSubmatch(out)
	if code != 1 || m == nil || !strings.Contains(m[1], "; accounturi=https://pebble-persist:14000/") || !strings.HasSuffix(m[1], "; policy=wildcard") ||
		!strings.Contains(out, "not in place") {
		t.Fatalf("dns-record persist: exit %d (want 1: missing), the record for %s with the account and policy=wildcard:\n%s", code, owner, out)
	}
	t.Logf("edgecert dns-record persist:\n%s", out)
	b.update(t, zone, fmt.Sprintf("%s. 60 IN TXT %q", owner, m[1]))
	if out, code := s.cli("dns-record", zone); code != 0 || !strings.Contains(out, "in place") {
		t.Fatalf("dns-record %s after the record was set: exit %d:\n%s", zone, code, out)
	}

	// The next order, asked for now (edgecert would check again within 10
	// minutes by itself), is the only one.
	if out, code := s.renew("persist"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew persist: exit %d:\n%s", code, out)
	}
	for _, d := range []string{zone, a} {
		leaf, err := s.verified(roots, d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if d == zone {
			t.Logf("%s: serial %s, SANs %v", d, serialOf(leaf), leaf.DNSNames)
			if !strings.Contains(strings.Join(leaf.DNSNames, ","), "*."+zone) {
				t.Errorf("SANs %v, want the wildcard", leaf.DNSNames)
			}
		}
	}
	after := newOrders(t, pebble)
	if after != 1 {
		t.Errorf("the CA created %d orders, want 1", after)
	}
	t.Logf("MEASURE dns-persist-01 orders_at_ca_while_missing=%d orders_at_ca_after=%d", missing, after)
	c, _ = s.cert("persist")
	if c.Challenge != "dns-persist-01" || !strings.Contains(historyText(c), "(dns-persist-01)") {
		t.Errorf("status of persist: challenge %q, history %s", c.Challenge, historyText(c))
	}
	// edgecert wrote nothing to DNS: the zone's TXT records are the operator's one.
	if left := b.challengeRecords(t, "_acme-challenge."+zone, owner); len(left) != 1 {
		t.Errorf("TXT records in the zone: %v, want the one the test set", left)
	}
}

func historyText(c certView) string {
	var parts []string
	for _, h := range c.History {
		parts = append(parts, h.Kind+": "+h.Detail)
	}
	return strings.Join(parts, "; ")
}

// update adds rr (zone-file text) to zone with a dynamic update signed by
// the server's key, as an operator's DNS host would.
func (b bindServer) update(t *testing.T, zone, rr string) {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.Insert([]dns.RR{r})
	m.SetTsig("edgecert.", dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Timeout: 5 * time.Second, TsigSecret: map[string]string{"edgecert.": b.secret}}
	ans, _, err := c.Exchange(m, b.ip+":53")
	if err != nil {
		t.Fatalf("update %s: %v", zone, err)
	}
	if ans.Rcode != dns.RcodeSuccess {
		t.Fatalf("update %s: %s", zone, dns.RcodeToString[ans.Rcode])
	}
}
