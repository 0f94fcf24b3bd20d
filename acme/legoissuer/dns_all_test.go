//go:build dnsall

package legoissuer

import (
	"strings"
	"testing"
)

// In the full build every name of lego's factory makes its provider: with
// no credentials in the environment, each fails for want of them, never as
// an unknown name. A few are made for real from their variables.
func TestAllDNSProviders(t *testing.T) {
	if got := len(DNSProviderNames()); got != len(legoDNSProviders) {
		t.Errorf("%d providers, lego has %d names", got, len(legoDNSProviders))
	}
	t.Setenv("CF_DNS_API_TOKEN", "token")
	t.Setenv("DO_AUTH_TOKEN", "token")
	t.Setenv("ACME_DNS_API_BASE", "http://127.0.0.1:1")
	t.Setenv("ACME_DNS_STORAGE_PATH", t.TempDir()+"/acme-dns.json")
	for _, n := range []string{"cloudflare", "digitalocean", "acme-dns", "acmedns"} {
		p, err := newDNSProviders([]string{n})
		if err != nil || p[n] == nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := newDNSProviders([]string{"gandiv5"}); err == nil || strings.Contains(err.Error(), "not one of") {
		t.Errorf("gandiv5 without its key: %v", err)
	}
}
