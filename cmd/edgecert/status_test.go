package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

func view(name string, state acme.State, notAfter time.Time) CertView {
	return CertView{CertStatus: acme.CertStatus{Name: name, State: state, NotAfter: notAfter, Domains: []string{name + ".example.com"}}}
}

// lived gives v a lifetime.
func lived(v CertView, lifetime time.Duration) CertView {
	v.NotBefore = v.NotAfter.Add(-lifetime)
	return v
}

func TestUnhealthy(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		desc string
		c    CertView
		warn time.Duration // set by the operator; 0: the default
		bad  bool
	}{
		{desc: "valid, far from expiry", c: view("a", "valid", now.Add(60*day))},
		{desc: "valid, inside the warning", c: view("a", "valid", now.Add(3*day)), bad: true},
		{desc: "failing", c: view("a", "failing", now.Add(60*day)), bad: true},
		{desc: "placeholder: not yet issued is not an expiry", c: view("a", "placeholder", now.Add(day))},
		{desc: "unused, expiring: nobody needs it", c: view("a", "unused", now.Add(day))},
		{desc: "short-lived (160 h), renewed at half: 4 days left is fine", c: lived(view("a", "valid", now.Add(4*day)), 160*time.Hour)},
		{desc: "short-lived (160 h), under a third left: its renewal is late", c: lived(view("a", "valid", now.Add(50*time.Hour)), 160*time.Hour), bad: true},
		{desc: "90 days, 20 days left: the warning (14 d) is shorter than a third", c: lived(view("a", "valid", now.Add(20*day)), 90*day)},
		{desc: "90 days, 60 days left, --warn-days 100 set: as the operator asked", c: lived(view("a", "valid", now.Add(60*day)), 90*day), warn: 100 * day, bad: true},
		{desc: "short-lived, --warn-days 14 set: as the operator asked", c: lived(view("a", "valid", now.Add(4*day)), 160*time.Hour), warn: 14 * day, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			warn, set := 14*day, tc.warn > 0
			if set {
				warn = tc.warn
			}
			got := unhealthy(StatusDoc{Certificates: []CertView{tc.c}}, now, warn, !set)
			if (len(got) > 0) != tc.bad {
				t.Errorf("unhealthy = %v, want bad=%v", got, tc.bad)
			}
		})
	}
}

func TestFindCertByNameOrDomain(t *testing.T) {
	doc := StatusDoc{Certificates: []CertView{view("site", "valid", time.Time{}), view("old", "unused", time.Time{})}}
	if c, ok := findCert(doc, "site"); !ok || c.Name != "site" {
		t.Errorf("by name: %v %v", c.Name, ok)
	}
	if c, ok := findCert(doc, "SITE.example.com"); !ok || c.Name != "site" {
		t.Errorf("by domain: %v %v", c.Name, ok)
	}
	if _, ok := findCert(doc, "old.example.com"); ok {
		t.Errorf("an unused certificate was found by domain")
	}
}

func TestPrintDetailShowsHistory(t *testing.T) {
	c := view("site", "valid", time.Now().Add(50*24*time.Hour))
	c.History = []acme.Event{{At: time.Now(), Kind: "issued", Serial: "abcd", Detail: "new certificate"}, {At: time.Now(), Kind: "reload_proven", Serial: "abcd"}}
	var b bytes.Buffer
	printDetail(&b, c, time.Now())
	out := b.String()
	for _, want := range []string{"site", "valid", "history", "issued", "reload_proven", "abcd"} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the golden files")

// The status table at 80 and 120 columns: a bounded DOMAINS column, the
// cause of an error first, one duration style.
func TestStatusTableGolden(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	doc := StatusDoc{Certificates: []CertView{
		{CertStatus: acme.CertStatus{Name: "shop", State: acme.StateValid, Domains: []string{"shop.example.com", "www.shop.example.com", "api.shop.example.com", "static.shop.example.com"},
			NotAfter: now.Add(61*day + 3*time.Hour), RenewAt: now.Add(31*day + 20*time.Hour), RenewSource: acme.SourceARI, Deployed: true},
			Reloads: []signal.Report{{Container: "nginx", OK: true}}},
		{CertStatus: acme.CertStatus{Name: "blog", State: acme.StateFailing, Domains: []string{"blog.example.com"},
			NotAfter: now.Add(29*time.Hour + 59*time.Minute), RenewAt: now.Add(42 * time.Second), RenewSource: acme.SourceRetry,
			LastError: "order blog: blog.example.com: acme: error: 403 :: POST :: https://acme-v02.api.letsencrypt.org/acme/chall/123/abc :: urn:ietf:params:acme:error:unauthorized :: 203.0.113.7: Invalid response from http://blog.example.com/.well-known/acme-challenge/x: 404"},
			Reloads: []signal.Report{{Container: "nginx", OK: true}, {Container: "nginx-2", OK: false}}},
		{CertStatus: acme.CertStatus{Name: "new", State: acme.StatePlaceholder, Domains: []string{"new.example.com"}, Phase: acme.PhaseOrdering}},
		{CertStatus: acme.CertStatus{Name: "old", State: acme.StateValid, Domains: []string{"old.example.com"},
			NotAfter: now.Add(80 * day), Held: &acme.Hold{Serial: "0abb", At: now.Add(-time.Hour)}, Deployed: true}},
	}}
	for _, width := range []int{80, 120} {
		var b bytes.Buffer
		printStatus(&b, doc, now, width)
		golden := filepath.Join("testdata", fmt.Sprintf("status-%d.golden", width))
		if *update {
			if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if b.String() != string(want) {
			t.Errorf("status at %d columns:\n%s\nwant (%s):\n%s", width, b.String(), golden, want)
		}
		for i, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			if n := utf8.RuneCountInString(line); n > width {
				t.Errorf("line %d is %d characters wide, over %d: %q", i, n, width, line)
			}
		}
	}
}

func TestErrorCauseComesFirst(t *testing.T) {
	tests := []struct{ in, want string }{
		{"order blog: acme: error: 403 :: POST :: https://ca/x :: urn:ietf:params:acme:error:unauthorized :: Invalid response: 404",
			"Invalid response: 404 (unauthorized; 403 POST https://ca/x; order blog)"},
		{"blog.example.com: acme: error: 0 :: urn:ietf:params:acme:error:dns :: no such host",
			"no such host (dns; blog.example.com)"},
		{"proxy does not serve the new certificate", "proxy does not serve the new certificate"},
		{"", "-"},
	}
	for _, tc := range tests {
		if got := errorCause(tc.in); got != tc.want {
			t.Errorf("errorCause(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestSpanHasOneStyle(t *testing.T) {
	for d, want := range map[time.Duration]string{
		42 * time.Second:               "42s",
		4*time.Minute + 10*time.Second: "4m 10s",
		30 * time.Hour:                 "1d 6h",
		61*24*time.Hour + 3*time.Hour:  "61d 3h",
		60 * 24 * time.Hour:            "60d",
		2*time.Hour + 30*time.Second:   "2h",
		0:                              "0s",
	} {
		if got := span(d); got != want {
			t.Errorf("span(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestStatusShowsBothFormsOfAnInternationalisedName(t *testing.T) {
	if got := domainsText([]string{"xn--bcher-kva.example", "www.example.com"}); got != "xn--bcher-kva.example (bücher.example) +1" {
		t.Errorf("domainsText = %q", got)
	}
	c := view("books", "valid", time.Now().Add(50*24*time.Hour))
	c.Domains = []string{"xn--bcher-kva.example"}
	var b bytes.Buffer
	printDetail(&b, c, time.Now())
	if !strings.Contains(b.String(), "xn--bcher-kva.example (bücher.example)") {
		t.Errorf("detail lacks both forms:\n%s", b.String())
	}
}
