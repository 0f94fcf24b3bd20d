package legoissuer

import (
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
