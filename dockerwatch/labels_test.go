package dockerwatch

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseDomains(t *testing.T) {
	tests := []struct {
		desc    string
		in      string
		want    []string
		wantErr string
	}{
		{desc: "comma list", in: "example.com,www.example.com", want: []string{"example.com", "www.example.com"}},
		{desc: "spaces, case, trailing dot, duplicates", in: " Example.COM. , www.example.com example.com", want: []string{"example.com", "www.example.com"}},
		{desc: "punycode", in: "xn--bcher-kva.example", want: []string{"xn--bcher-kva.example"}},
		{desc: "unicode to punycode, once", in: "bücher.example, BÜCHER.example,xn--bcher-kva.example", want: []string{"xn--bcher-kva.example"}},
		{desc: "unicode subdomain", in: "www.münchen.example", want: []string{"www.xn--mnchen-3ya.example"}},
		{desc: "invalid unicode", in: "a\u200db.example", wantErr: "not a valid internationalised domain name"},
		{desc: "unicode wildcard", in: "*.bücher.example", want: []string{"*.xn--bcher-kva.example"}},
		{desc: "empty", in: " , ", wantErr: "no domain names"},
		{desc: "wildcard (its challenge is checked with the labels)", in: "*.example.com,example.com", want: []string{"*.example.com", "example.com"}},
		{desc: "wildcard not first", in: "a.*.example.com", wantErr: "whole first label"},
		{desc: "bad name under a wildcard", in: "*.-x.example.com", wantErr: "label"},
		{desc: "ipv4", in: "192.0.2.10", want: []string{"192.0.2.10"}},
		{desc: "ipv6 canonical (RFC 5952), brackets allowed, once", in: "2001:DB8:0:0:0:0:0:1,[2001:db8::1]", want: []string{"2001:db8::1"}},
		{desc: "a name and an address", in: "www.example.com, 192.0.2.10", want: []string{"www.example.com", "192.0.2.10"}},
		{desc: "ipv6 with a zone", in: "fe80::1%eth0", wantErr: "zone"},
		{desc: "ipv4-mapped ipv6", in: "::ffff:192.0.2.10", wantErr: "write the IPv4 address (192.0.2.10)"},
		{desc: "loopback", in: "127.0.0.1", wantErr: "not an address a CA can reach"},
		{desc: "wildcard over an address", in: "*.192.0.2.10", wantErr: "cannot be under a wildcard"},
		{desc: "not quite an address", in: "10.0.0.256", wantErr: "numeric"},
		{desc: "single label", in: "localhost", wantErr: "fully qualified"},
		{desc: "path traversal", in: "../../etc/passwd", wantErr: "label"},
		{desc: "slash", in: "a/b.example.com", wantErr: "label"},
		{desc: "leading hyphen", in: "-a.example.com", wantErr: "label"},
		{desc: "underscore", in: "a_b.example.com", wantErr: "label"},
		{desc: "numeric tld", in: "example.123", wantErr: "numeric"},
		{desc: "long label", in: strings.Repeat("a", 64) + ".com", wantErr: "1-63"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ParseDomains(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseDomains(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseDomains(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	cs := []Container{
		{ID: "1", Name: "nginx", Created: 1, Running: true, Labels: map[string]string{"edgecert.nginx": "true", "edgecert.domains": "proxy.example.com"}},
		{ID: "2", Name: "app", Created: 2, Running: true, Labels: map[string]string{"edgecert.domains": "example.com,www.example.com"}},
		{ID: "3", Name: "app-replica", Created: 3, Running: true, Labels: map[string]string{"edgecert.domains": "www.example.com,example.com", "edgecert.name": "example.com"}},
		{ID: "4", Name: "bad", Created: 4, Running: true, Labels: map[string]string{"edgecert.domains": "bad_domain.example.com"}},
		{ID: "5", Name: "clash", Created: 5, Running: true, Labels: map[string]string{"edgecert.domains": "other.example.com", "edgecert.name": "example.com"}},
		{ID: "6", Name: "named", Created: 6, Running: true, Labels: map[string]string{"edgecert.domains": "api.example.com", "edgecert.name": "api"}},
		{ID: "7", Name: "green", Created: 7, Running: true, Labels: map[string]string{"edgecert.nginx": "green", "edgecert.tls_port": "8443"}},
		{ID: "8", Name: "badport", Created: 8, Running: true, Labels: map[string]string{"edgecert.nginx": "true", "edgecert.tls_port": "99999"}},
		{ID: "9", Name: "badname", Created: 9, Running: true, Labels: map[string]string{"edgecert.domains": "x.example.com", "edgecert.name": "../x"}},
		{ID: "10", Name: "other-prefix", Created: 10, Running: true, Labels: map[string]string{"acme.domains": "y.example.com"}},
		{ID: "11", Name: "stopped-app", Created: 11, Labels: map[string]string{"edgecert.domains": "stopped.example.com"}},
		{ID: "12", Name: "stopped-nginx", Created: 12, Labels: map[string]string{"edgecert.nginx": "true"}},
		{ID: "13", Name: "opts", Created: 13, Running: true, Labels: map[string]string{"edgecert.domains": "o.example.com",
			"edgecert.key_type": "RSA2048", "edgecert.profile": "shortlived", "edgecert.email": "ops@example.com"}},
		{ID: "14", Name: "opts-replica", Created: 14, Running: true, Labels: map[string]string{"edgecert.domains": "o.example.com", "edgecert.key_type": "ec384"}},
		{ID: "15", Name: "badkey", Created: 15, Running: true, Labels: map[string]string{"edgecert.domains": "k.example.com", "edgecert.key_type": "dsa"}},
		{ID: "16", Name: "badmail", Created: 16, Running: true, Labels: map[string]string{"edgecert.domains": "m.example.com", "edgecert.email": "root"}},
		{ID: "17", Name: "apache", Created: 17, Running: true, Labels: map[string]string{"edgecert.nginx": "legacy", "edgecert.signal": "sigusr1",
			"edgecert.config_test": "apache2 -t", "edgecert.workers": "apache2", "edgecert.domains": "legacy.example.com"}},
		{ID: "18", Name: "haproxy", Created: 18, Running: true, Labels: map[string]string{"edgecert.nginx": "true", "edgecert.signal": "USR2", "edgecert.config_test": ""}},
		{ID: "19", Name: "killer", Created: 19, Running: true, Labels: map[string]string{"edgecert.nginx": "true", "edgecert.signal": "KILL"}},
		{ID: "20", Name: "grouped-app", Created: 20, Running: true, Labels: map[string]string{"edgecert.domains": "g.example.com", "edgecert.proxy": "blue"}},
		{ID: "21", Name: "badgroup", Created: 21, Running: true, Labels: map[string]string{"edgecert.domains": "bg.example.com", "edgecert.proxy": "true"}},
	}
	d := Parse(testRules, cs)

	wantCerts := []CertSpec{
		{Name: "api", Domains: []string{"api.example.com"}, Containers: []string{"named"}},
		{Name: "example.com", Domains: []string{"example.com", "www.example.com"}, Containers: []string{"app", "app-replica"}},
		{Name: "g.example.com", Domains: []string{"g.example.com"}, Containers: []string{"grouped-app"}, Group: "blue"},
		{Name: "legacy.example.com", Domains: []string{"legacy.example.com"}, Containers: []string{"apache"}, Group: "legacy"},
		{Name: "o.example.com", Domains: []string{"o.example.com"}, Containers: []string{"opts"}, KeyType: "rsa2048", Profile: "shortlived", Email: "ops@example.com"},
		{Name: "proxy.example.com", Domains: []string{"proxy.example.com"}, Containers: []string{"nginx"}},
	}
	if !reflect.DeepEqual(d.Certs, wantCerts) {
		t.Errorf("certs = %+v\nwant %+v", d.Certs, wantCerts)
	}
	wantProxies := []Proxy{
		{ID: "17", Name: "apache", Group: "legacy", TLSPort: 443, Running: true, Signal: "USR1", ConfigTest: []string{"apache2", "-t"}, HasConfigTest: true, WorkerPattern: "apache2"},
		{ID: "7", Name: "green", Group: "green", TLSPort: 8443, Running: true},
		{ID: "18", Name: "haproxy", TLSPort: 443, Running: true, Signal: "USR2", HasConfigTest: true},
		{ID: "1", Name: "nginx", TLSPort: 443, Running: true}, {ID: "12", Name: "stopped-nginx", TLSPort: 443}}
	if !reflect.DeepEqual(d.Proxies, wantProxies) {
		t.Errorf("proxies = %+v\nwant %+v", d.Proxies, wantProxies)
	}
	wantProblems := map[string]string{
		"bad":          "edgecert.domains",
		"clash":        "edgecert.domains",
		"badport":      "edgecert.tls_port",
		"badname":      "edgecert.name",
		"opts-replica": "edgecert.key_type",
		"badkey":       "edgecert.key_type",
		"badmail":      "edgecert.email",
		"killer":       "edgecert.signal",
		"badgroup":     "edgecert.proxy",
	}
	if len(d.Problems) != len(wantProblems) {
		t.Fatalf("problems = %v, want one each for %v", d.Problems, wantProblems)
	}
	for _, p := range d.Problems {
		if wantProblems[p.Container] != p.Label || p.Err == "" {
			t.Errorf("unexpected problem %v", p)
		}
	}
}

func TestParseCompanion(t *testing.T) {
	cs := []Container{
		{ID: "p", Name: "nginx-proxy", Running: true, NginxProxy: true, Labels: map[string]string{NginxProxyLabel: ""}},
		{ID: "a", Name: "blog", Running: true, CompanionHosts: "blog.example.com,www.blog.example.com", CompanionVar: "LETSENCRYPT_HOST",
			CompanionEmail: "me@example.com"},
		{ID: "b", Name: "bad", Running: true, CompanionHosts: "bad_host.example.com", CompanionVar: "ACME_HOST"},
		{ID: "c", Name: "labelled", Running: true, CompanionHosts: "ignored.example.com", CompanionVar: "LETSENCRYPT_HOST",
			Labels: map[string]string{"edgecert.domains": "label.example.com"}, CompanionSingle: true},
		// ACME_SINGLE_DOMAIN_CERTS=true: a certificate per name.
		// ... with acme-companion's key size and profile.
		{ID: "d", Name: "shop", Running: true, CompanionHosts: "shop.example.com,www.shop.example.com", CompanionVar: "ACME_HOST",
			CompanionSingle: true, CompanionKeySize: "4096", CompanionKeyVar: "LETSENCRYPT_KEYSIZE", CompanionProfile: "shortlived"},
		{ID: "e", Name: "small", Running: true, CompanionHosts: "small.example.com", CompanionVar: "ACME_HOST",
			CompanionKeySize: "1024", CompanionKeyVar: "ACME_KEYSIZE"},
	}
	d := Parse(testRules, cs)
	want := []CertSpec{
		{Name: "blog.example.com", Domains: []string{"blog.example.com", "www.blog.example.com"}, Containers: []string{"blog"}, Email: "me@example.com"},
		{Name: "label.example.com", Domains: []string{"label.example.com"}, Containers: []string{"labelled"}},
		{Name: "shop.example.com", Domains: []string{"shop.example.com"}, Containers: []string{"shop"}, KeyType: "rsa4096", Profile: "shortlived"},
		{Name: "www.shop.example.com", Domains: []string{"www.shop.example.com"}, Containers: []string{"shop"}, KeyType: "rsa4096", Profile: "shortlived"},
	}
	if !reflect.DeepEqual(d.Certs, want) {
		t.Errorf("certs = %+v\nwant %+v", d.Certs, want)
	}
	if len(d.Proxies) != 1 || d.Proxies[0].Name != "nginx-proxy" || d.Proxies[0].Group != "" || len(d.Proxies[0].ReloadCommand) != 3 {
		t.Errorf("proxies = %+v, want nginx-proxy for every certificate", d.Proxies)
	}
	if len(d.Problems) != 2 || d.Problems[0].Label != "env ACME_HOST" || d.Problems[0].Container != "bad" ||
		d.Problems[1].Label != "env ACME_KEYSIZE" || d.Problems[1].Container != "small" || !strings.Contains(d.Problems[1].Err, `"1024"`) {
		t.Errorf("problems = %+v, want env ACME_HOST on bad and env ACME_KEYSIZE on small", d.Problems)
	}
}

// testRules are the rules cmd/edgecert passes, with a stand-in name check.
var testRules = Rules{Prefix: "edgecert", KeyTypes: []string{"ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"}}

func TestRulesCheckName(t *testing.T) {
	for _, bad := range []string{"", ".hidden", "a/b", strings.Repeat("a", 101)} {
		if err := testRules.checkName(bad); err == nil {
			t.Errorf("checkName(%q) = nil without a CertName rule, want an error", bad)
		}
	}
	r := testRules
	r.CertName = func(n string) error {
		if n == "taken" {
			return errors.New("reserved")
		}
		return nil
	}
	cs := []Container{{ID: "1", Name: "app", Running: true, Labels: map[string]string{"edgecert.domains": "a.example.com", "edgecert.name": "taken"}}}
	if d := Parse(r, cs); len(d.Certs) != 0 || len(d.Problems) != 1 || d.Problems[0].Label != "edgecert.name" {
		t.Errorf("Parse with a refusing CertName = %+v, want one problem on edgecert.name", d)
	}
}

func TestParseARecreatedOwnerKeepsItsName(t *testing.T) {
	cs := []Container{
		// Older, default naming: its first domain happens to be the owner's name.
		{ID: "1", Name: "old-api", Created: 1, Running: true, Labels: map[string]string{"edgecert.domains": "shop.example.com,api.example.com"}},
		// The owner, recreated a moment ago, names its certificate.
		{ID: "2", Name: "shop", Created: 2, Running: true, Labels: map[string]string{"edgecert.domains": "shop.example.com,www.shop.example.com", "edgecert.name": "shop.example.com"}},
	}
	d := Parse(testRules, cs)
	if len(d.Certs) != 1 || d.Certs[0].Containers[0] != "shop" || !slices.Equal(d.Certs[0].Domains, []string{"shop.example.com", "www.shop.example.com"}) {
		t.Fatalf("certs = %+v, want the owner's", d.Certs)
	}
	if len(d.Problems) != 1 || d.Problems[0].Container != "old-api" || !strings.Contains(d.Problems[0].Err, "names explicitly") {
		t.Fatalf("problems = %v, want one for old-api saying why", d.Problems)
	}
}

// combined_pem on a proxy marks the certificates it serves: its group's, or
// every one for an all-groups proxy; a bad value is a problem.
func TestParseCombinedPEM(t *testing.T) {
	cs := []Container{
		{ID: "1", Name: "haproxy", Created: 1, Running: true, Labels: map[string]string{"edgecert.nginx": "lb", "edgecert.combined_pem": "true"}},
		{ID: "2", Name: "nginx", Created: 2, Running: true, Labels: map[string]string{"edgecert.nginx": "web"}},
		{ID: "3", Name: "bad", Created: 3, Running: true, Labels: map[string]string{"edgecert.nginx": "true", "edgecert.combined_pem": "please"}},
		{ID: "4", Name: "lb-app", Created: 4, Running: true, Labels: map[string]string{"edgecert.domains": "lb.example.com", "edgecert.proxy": "lb"}},
		{ID: "5", Name: "web-app", Created: 5, Running: true, Labels: map[string]string{"edgecert.domains": "web.example.com", "edgecert.proxy": "web"}},
	}
	d := Parse(testRules, cs)
	got := map[string]bool{}
	for _, c := range d.Certs {
		got[c.Name] = c.CombinedPEM
	}
	if !got["lb.example.com"] || got["web.example.com"] {
		t.Errorf("combined_pem by group = %v; want lb.example.com only", got)
	}
	if len(d.Problems) != 1 || d.Problems[0].Container != "bad" || d.Problems[0].Label != "edgecert.combined_pem" {
		t.Errorf("problems = %v; want one for bad's edgecert.combined_pem", d.Problems)
	}
	cs[1].Labels["edgecert.nginx"], cs[1].Labels["edgecert.combined_pem"] = "true", "yes"
	for _, c := range Parse(testRules, cs).Certs {
		if !c.CombinedPEM {
			t.Errorf("%s: an all-groups proxy asks for combined.pem, and the certificate does not get it", c.Name)
		}
	}
}

// A wildcard name chooses DNS-01, which needs a configured provider;
// edgecert.challenge and edgecert.dns_provider are checked.
func TestParseChallenge(t *testing.T) {
	cs := []Container{
		{ID: "1", Name: "wild", Created: 1, Running: true, Labels: map[string]string{"edgecert.domains": "*.wild.test,wild.test"}},
		{ID: "2", Name: "inside", Created: 2, Running: true, Labels: map[string]string{"edgecert.domains": "intranet.test", "edgecert.challenge": "DNS-01"}},
		{ID: "3", Name: "plain", Created: 3, Running: true, Labels: map[string]string{"edgecert.domains": "plain.test"}},
		{ID: "4", Name: "wild-http", Created: 4, Running: true, Labels: map[string]string{"edgecert.domains": "*.w2.test", "edgecert.challenge": "http-01"}},
		{ID: "5", Name: "other-dns", Created: 5, Running: true, Labels: map[string]string{"edgecert.domains": "o.test", "edgecert.dns_provider": "route53"}},
		{ID: "6", Name: "bad-chal", Created: 6, Running: true, Labels: map[string]string{"edgecert.domains": "b.test", "edgecert.challenge": "tls-alpn-01"}},
	}
	r := testRules
	r.DNSProviders = []string{"rfc2136", "route53"}
	d := Parse(r, cs)
	got := map[string]string{}
	for _, c := range d.Certs {
		got[c.Name] = c.Challenge + "/" + c.DNS
	}
	want := map[string]string{"wild.test": "dns-01/rfc2136", "intranet.test": "dns-01/rfc2136", "plain.test": "/", "o.test": "dns-01/route53"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("challenges = %v, want %v", got, want)
	}
	probs := map[string]string{}
	for _, p := range d.Problems {
		probs[p.Container] = p.Label + ": " + p.Err
	}
	if !strings.Contains(probs["wild-http"], "edgecert.challenge: http-01 cannot prove a wildcard") || !strings.Contains(probs["bad-chal"], "want http-01, dns-01 or dns-persist-01") || len(probs) != 2 {
		t.Errorf("problems = %v", probs)
	}

	// No provider configured: the wildcard and the dns-01 label are problems
	// that say what to set; the rest goes on.
	d = Parse(testRules, cs[:3])
	probs = map[string]string{}
	for _, p := range d.Problems {
		probs[p.Container] = p.Label + ": " + p.Err
	}
	if !strings.Contains(probs["wild"], "edgecert.domains: a wildcard name needs dns-01") || !strings.Contains(probs["inside"], "EDGECERT_DNS_PROVIDER") ||
		len(d.Certs) != 1 || d.Certs[0].Name != "plain.test" {
		t.Errorf("without a provider: problems %v, certs %v", probs, d.Certs)
	}
	if n := defaultName([]string{"*.only.test"}); n != "wildcard.only.test" {
		t.Errorf("defaultName of a lone wildcard = %q", n)
	}
}

// TestParseAddressesAndPersist: IP addresses get a name a volume takes, the
// short-lived profile unless a label names one, and HTTP-01 only;
// DNS-PERSIST-01 needs no DNS provider, proves wildcards, and takes no
// provider label.
func TestParseAddressesAndPersist(t *testing.T) {
	cs := []Container{
		{ID: "1", Name: "v4", Created: 1, Running: true, Labels: map[string]string{"edgecert.domains": "192.0.2.10"}},
		{ID: "2", Name: "v6", Created: 2, Running: true, Labels: map[string]string{"edgecert.domains": "2001:db8::1,www.v6.test"}},
		{ID: "3", Name: "v4-profile", Created: 3, Running: true, Labels: map[string]string{"edgecert.domains": "192.0.2.11", "edgecert.profile": "sixdays"}},
		{ID: "4", Name: "v4-dns", Created: 4, Running: true, Labels: map[string]string{"edgecert.domains": "192.0.2.12", "edgecert.challenge": "dns-01"}},
		{ID: "5", Name: "persist", Created: 5, Running: true, Labels: map[string]string{"edgecert.domains": "*.p.test,p.test", "edgecert.challenge": "DNS-PERSIST-01"}},
		{ID: "6", Name: "persist-dns", Created: 6, Running: true, Labels: map[string]string{"edgecert.domains": "q.test", "edgecert.challenge": "dns-persist-01", "edgecert.dns_provider": "rfc2136"}},
		{ID: "7", Name: "v4-persist", Created: 7, Running: true, Labels: map[string]string{"edgecert.domains": "192.0.2.13", "edgecert.challenge": "dns-persist-01"}},
	}
	r := storeRules
	r.IPProfile = "shortlived"
	d := Parse(r, cs)
	got := map[string]string{}
	for _, c := range d.Certs {
		got[c.Name] = strings.Join(c.Domains, ",") + " " + c.Profile + " " + c.Challenge
	}
	want := map[string]string{
		"192.0.2.10":  "192.0.2.10 shortlived ",
		"2001-db8--1": "2001:db8::1,www.v6.test shortlived ",
		"192.0.2.11":  "192.0.2.11 sixdays ",
		"p.test":      "*.p.test,p.test  dns-persist-01",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("certificates = %v, want %v", got, want)
	}
	probs := map[string]string{}
	for _, p := range d.Problems {
		probs[p.Container] = p.Label + ": " + p.Err
	}
	for c, w := range map[string]string{
		"v4-dns":      "edgecert.challenge: 192.0.2.12: a CA validates an IP address over http-01 only",
		"persist-dns": "edgecert.dns_provider: dns-persist-01 uses no DNS provider",
		"v4-persist":  "edgecert.challenge: 192.0.2.13: a CA validates an IP address over http-01 only",
	} {
		if !strings.Contains(probs[c], w) {
			t.Errorf("%s: problem %q, want one containing %q", c, probs[c], w)
		}
	}
	if len(probs) != 3 {
		t.Errorf("problems = %v, want 3", probs)
	}
}

// In acme-companion mode, ACME_CHALLENGE=DNS-01 on a container selects DNS-01.
func TestParseCompanionChallenge(t *testing.T) {
	r := testRules
	r.DNSProviders = []string{"rfc2136"}
	d := Parse(r, []Container{{ID: "1", Name: "blog", Created: 1, Running: true, CompanionHosts: "blog.example.com", CompanionVar: "LETSENCRYPT_HOST",
		CompanionChallenge: "DNS-01"}})
	if len(d.Certs) != 1 || d.Certs[0].Challenge != ChallengeDNS || d.Certs[0].DNS != "rfc2136" {
		t.Errorf("certs = %+v; want blog.example.com over dns-01 through rfc2136", d.Certs)
	}
}

// TestDefaultNameEveryLength: a certificate named after its first domain
// gets the same name check as edgecert.name, at every length a domain can
// have: up to the store's 100 characters it is wanted under that name;
// past it the container is told, on the label it came from, to name it;
// with edgecert.name it is wanted whatever its domain's length.
func TestDefaultNameEveryLength(t *testing.T) {
	rules := storeRules
	rules.DNSProviders = []string{"exec"} // wildcards need one
	for n := 4; n <= 253; n++ {
		dom := domainOfLength(n)
		if len(dom) != n || ValidateDomain(dom) != nil {
			t.Fatalf("domainOfLength(%d) = %q (%d characters, %v)", n, dom, len(dom), ValidateDomain(dom))
		}
		for _, tc := range []struct {
			desc, domains, name, want string
			fits                      bool
		}{
			{desc: "plain", domains: dom, want: dom, fits: n <= 100},
			{desc: "wildcard", domains: "*." + dom, want: "wildcard." + dom, fits: n+len("wildcard.") <= 100},
			{desc: "named", domains: dom, name: "site", want: "site", fits: true},
		} {
			labels := map[string]string{"edgecert.domains": tc.domains}
			if tc.name != "" {
				labels["edgecert.name"] = tc.name
			}
			d := Parse(rules, []Container{
				{ID: "1", Name: "app", Running: true, Labels: labels},
				{ID: "2", Name: "other", Running: true, Labels: map[string]string{"edgecert.domains": "other.example.com"}},
			})
			switch {
			case tc.fits && (len(d.Certs) != 2 || len(d.Problems) != 0 || d.Certs[1].Name != tc.want && d.Certs[0].Name != tc.want):
				t.Fatalf("%s, %d characters: %+v, want certificates %q and other.example.com", tc.desc, n, d, tc.want)
			case !tc.fits && (len(d.Certs) != 1 || d.Certs[0].Name != "other.example.com" || len(d.Problems) != 1 ||
				d.Problems[0].Container != "app" || d.Problems[0].Label != "edgecert.domains" || !strings.Contains(d.Problems[0].Err, "give this container edgecert.name")):
				t.Fatalf("%s, %d characters: %+v, want a problem on app's edgecert.domains naming edgecert.name, and other.example.com wanted", tc.desc, n, d)
			}
		}
	}
}
