package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

func view(name string, state acme.State, notAfter time.Time) CertView {
	return CertView{CertStatus: acme.CertStatus{Name: name, State: state, NotAfter: notAfter, Domains: []string{name + ".example.com"}}}
}

func TestUnhealthy(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		desc string
		c    CertView
		bad  bool
	}{
		{desc: "valid, far from expiry", c: view("a", "valid", now.Add(60*day))},
		{desc: "valid, inside the warning", c: view("a", "valid", now.Add(3*day)), bad: true},
		{desc: "failing", c: view("a", "failing", now.Add(60*day)), bad: true},
		{desc: "placeholder: not yet issued is not an expiry", c: view("a", "placeholder", now.Add(day))},
		{desc: "unused, expiring: nobody needs it", c: view("a", "unused", now.Add(day))},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got := unhealthy(StatusDoc{Certificates: []CertView{tc.c}}, now, 14*day)
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
