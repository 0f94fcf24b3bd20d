package legoissuer

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// lego v4.34's rfc2136 provider reads an unset RFC2136_ZONES as [""], the
// zone "."; ours finds the zone by asking the server.
func TestRFC2136WithoutZones(t *testing.T) {
	t.Setenv("RFC2136_NAMESERVER", "127.0.0.1:53")
	t.Setenv("RFC2136_TSIG_KEY", "edgecert.")
	t.Setenv("RFC2136_TSIG_SECRET", "c2VjcmV0")
	p, err := newRFC2136()
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatal("no provider")
	}
	t.Setenv("RFC2136_NAMESERVER", "")
	if _, err := newRFC2136(); err == nil {
		t.Error("no error without RFC2136_NAMESERVER")
	}
}

// dns_names.go is what internal/gendns makes of the lego module go.mod
// requires: after a lego upgrade, `go generate ./acme/legoissuer`.
func TestDNSNamesMatchLego(t *testing.T) {
	out := filepath.Join(t.TempDir(), "names.go")
	cmd := exec.Command("go", "run", "./internal/gendns", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gendns: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("dns_names.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("dns_names.go is not what lego's factory names: run go generate ./acme/legoissuer")
	}
	for _, n := range []string{"cloudflare", "route53", "acme-dns", "rfc2136", "exec"} {
		if !slices.Contains(legoDNSProviders, n) {
			t.Errorf("%s missing from legoDNSProviders", n)
		}
	}
}

func TestCheckDNSProvider(t *testing.T) {
	if err := CheckDNSProvider("rfc2136"); err != nil {
		t.Error(err)
	}
	err := CheckDNSProvider("route53")
	switch dnsBuild {
	case "minimal":
		if err == nil || !strings.Contains(err.Error(), "DNS_PROVIDERS=minimal") {
			t.Errorf("route53 in a minimal build: %v", err)
		}
	case "all":
		if err != nil {
			t.Errorf("route53 in the full build: %v", err)
		}
	}
	if err := CheckDNSProvider("cloudfare"); err == nil || !strings.Contains(err.Error(), "not one of lego") {
		t.Errorf("a misspelt name: %v", err)
	}
}
