package signal

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// leafFor is a parsed self-signed ECDSA leaf for names, issued at notBefore.
func leafFor(t *testing.T, notBefore time.Time, names ...string) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: notBefore, NotAfter: notBefore.Add(time.Hour)}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return leaf
}

func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	proven := leafFor(t, t0, "a.example.com", "www.a.example.com")
	sameSecond := leafFor(t, t0, "a.example.com", "www.a.example.com")
	later := leafFor(t, t0.Add(time.Minute), "www.a.example.com", "A.example.com")
	c := Cert{Name: "a", Domains: []string{"a.example.com", "www.a.example.com"}, Fingerprint: shownOf(proven).Fingerprint, KeyAlg: x509.ECDSA}
	ipLeaf := leafFor(t, t0, "192.0.2.10", "2001:db8::1")
	ipc := Cert{Name: "ip", Domains: []string{"192.0.2.10", "2001:db8::1"}, Fingerprint: shownOf(ipLeaf).Fingerprint, KeyAlg: x509.ECDSA}
	for _, tc := range []struct {
		desc    string
		c       Cert
		sni     string
		leaf    *x509.Certificate
		current string // what the volume holds now
		want    verdict
	}{
		{desc: "the very leaf", c: c, sni: "a.example.com", leaf: proven, want: isServed},
		{desc: "a later version the volume holds now (a later deployment)", c: c, sni: "a.example.com", leaf: later, current: shownOf(later).Fingerprint, want: isNewer},
		{desc: "a later version the volume no longer holds (a rollback): not this one", c: c, sni: "a.example.com", leaf: later, current: c.Fingerprint, want: isOlder},
		{desc: "what the volume holds now, issued in the same second", c: c, sni: "a.example.com", leaf: sameSecond, current: shownOf(sameSecond).Fingerprint, want: isNewer},
		{desc: "an older version (not loaded yet)", c: c, sni: "a.example.com", leaf: leafFor(t, t0.Add(-time.Hour), "a.example.com", "www.a.example.com"), want: isOlder},
		{desc: "a later version, the volume unknown: only itself proves it", c: c, sni: "a.example.com", leaf: later, want: isOlder},
		{desc: "the default server's certificate", c: c, sni: "a.example.com", leaf: leafFor(t, t0, "default.invalid"), want: isNoServer},
		{desc: "another name's certificate", c: c, sni: "www.a.example.com", leaf: leafFor(t, t0.Add(time.Hour), "b.example.com"), want: isNoServer},
		{desc: "another certificate that covers the name", c: c, sni: "a.example.com", leaf: leafFor(t, t0.Add(time.Hour), "a.example.com"), want: isOther},
		{desc: "a wildcard of another certificate", c: c, sni: "www.a.example.com", leaf: leafFor(t, t0.Add(time.Hour), "*.a.example.com"), want: isOther},
		{desc: "an address: another version of it", c: ipc, sni: "2001:db8::1", leaf: leafFor(t, t0.Add(-time.Hour), "2001:db8::1", "192.0.2.10"), want: isOlder},
		{desc: "an address: the very leaf", c: ipc, sni: "192.0.2.10", leaf: ipLeaf, want: isServed},
		{desc: "an address: the default server's certificate, for names", c: ipc, sni: "192.0.2.10", leaf: leafFor(t, t0, "a.example.com"), want: isNoServer},
		{desc: "an address: another certificate that covers it", c: ipc, sni: "192.0.2.10", leaf: leafFor(t, t0, "192.0.2.10"), want: isOther},
		{desc: "the same names, another key algorithm", c: Cert{Domains: c.Domains, Fingerprint: c.Fingerprint, KeyAlg: x509.RSA},
			sni: "a.example.com", leaf: leafFor(t, t0.Add(time.Minute), "a.example.com", "www.a.example.com"), want: isOther},
	} {
		if got := judge(tc.c, tc.sni, shownOf(tc.leaf), tc.current); got != tc.want {
			t.Errorf("%s: judge = %d, want %d", tc.desc, got, tc.want)
		}
	}
}

// The rest after a slow reload is the proxy's own work: config test,
// signal, new workers; never the wait for handshakes.
func TestLoadTookIsTheProxysOwnWork(t *testing.T) {
	rep := Report{Steps: []Step{{Step: "inspect", TookMS: 3}, {Step: "config_test", TookMS: 100}, {Step: "workers_before", TookMS: 7},
		{Step: "signal", TookMS: 5}, {Step: "workers_new", TookMS: 200}, {Step: "handshake", TookMS: 30000}, {Step: "handshake", TookMS: 29000}}}
	if got := rep.loadTook(); got != 305*time.Millisecond {
		t.Errorf("loadTook = %s, want 305ms", got)
	}
}

// A proxy that answers for one certificate's name with its default
// server's certificate: the proof gives up on that one within about
// otherGrace, the others of the batch are proven, and the report is no
// failure; the one is a NoServerError naming the proxy, the name and what
// was presented.
func TestProofAnswersAtOnceForANameWithoutServer(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	def, _ := selfSignedCert(t, "default.invalid")
	f.bySNI = map[string]*tls.Certificate{"unserved.example.com": def}
	r := reloader(f)
	r.opts.Timeout = 30 * time.Second // as a user's default: the proof must not wait for it
	p := Proxy{ID: "n1", Name: "nginx", TLSPort: port}
	served := Cert{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}
	_, otherFP := selfSignedCert(t, "unserved.example.com")
	unserved := Cert{Name: "u", Domains: []string{"unserved.example.com"}, Serial: "u1", Fingerprint: otherFP}
	start := time.Now()
	rep := r.Ensure(context.Background(), p, []Cert{served, unserved})
	took := time.Since(start)
	if !rep.OK || rep.Error != "" || len(rep.CertErrors) != 0 {
		t.Fatalf("report = %+v; want OK: an unserved name is no failure of the batch", rep)
	}
	if rep.ErrFor("a") != nil {
		t.Errorf("a: %v, want proven", rep.ErrFor("a"))
	}
	err := rep.ErrFor("u")
	if !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "nginx has no server for unserved.example.com") ||
		!strings.Contains(err.Error(), "default.invalid") {
		t.Errorf("u: %v; want a NoServerError naming nginx, the name and the default certificate", err)
	}
	if view := rep.ForCert("u"); view.OK || view.Unserved["u"] == "" {
		t.Errorf("u's view = %+v; want not OK, with its hint", view)
	}
	// Measured, not asserted: the wait is otherGrace plus handshakes,
	// against the 30 s timeout.
	t.Logf("proof with an unserved name took %s (timeout %s)", took, r.opts.Timeout)
	if took >= r.opts.Timeout {
		t.Errorf("the proof waited for the whole timeout (%s)", took)
	}
}

// A deployment overtaken by a later one (two renewals in one second: their
// dates cannot tell them apart) is proven by what the volume holds now,
// and at once, not after the timeout.
func TestProofOfAnOvertakenDeploymentAcceptsTheCurrentVersion(t *testing.T) {
	f, _, current := newFake(t) // after the HUP it serves the current version
	port, _ := strconv.Atoi(f.port)
	_, overtaken := selfSignedCert(t, "a.example.com")
	r := reloader(f)
	r.opts.Timeout = 30 * time.Second
	r.opts.Current = func(name string) string {
		if name == "a" {
			return current
		}
		return ""
	}
	start := time.Now()
	rep := r.Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "old", Fingerprint: overtaken}})
	if !rep.OK || time.Since(start) >= r.opts.Timeout {
		t.Fatalf("report = %+v after %s; want proven by the current version", rep, time.Since(start))
	}
	if last := rep.Steps[len(rep.Steps)-1]; last.Step != "handshake" || !strings.Contains(last.Detail, "a newer version") {
		t.Errorf("last step = %+v; want a handshake naming the newer version", last)
	}
}

// A rollback: nginx serves a later version than the one the volume holds
// again; the proof does not take the later one for served, so the proxy is
// reloaded and serves the one put back.
func TestProofOfARollbackReloads(t *testing.T) {
	f, next, _ := newFake(t)
	port, _ := strconv.Atoi(f.port)
	back := f.serving // the earlier version, put back on the volume
	sum := sha256.Sum256(back.Certificate[0])
	backFP := hex.EncodeToString(sum[:])
	f.serving, f.pending = next, back // nginx serves the later one until a HUP
	r := reloader(f)
	r.opts.Timeout = 10 * time.Second
	r.opts.Current = func(string) string { return backFP }
	rep := r.Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "back", Fingerprint: backFP, KeyAlg: x509.ECDSA}})
	if !rep.OK || !rep.Reloaded || len(f.killed()) != 1 {
		t.Fatalf("report = %+v, kills %v; want a reload that makes nginx serve the version put back", rep, f.killed())
	}
}

func TestAddressFor(t *testing.T) {
	addrs := []string{"10.0.0.5:443", "[fd00::5]:443"}
	for _, tc := range []struct{ desc, addr, d, want string }{
		{desc: "a name: the address being tried", addr: "10.0.0.5:443", d: "a.example.com", want: "10.0.0.5:443"},
		{desc: "the proxy's IPv6 address: reached there", addr: "10.0.0.5:443", d: "fd00::5", want: "[fd00::5]:443"},
		{desc: "the proxy's IPv4 address: reached there", addr: "[fd00::5]:443", d: "10.0.0.5", want: "10.0.0.5:443"},
		{desc: "another address (published on the host's): the address being tried", addr: "10.0.0.5:443", d: "192.0.2.10", want: "10.0.0.5:443"},
	} {
		if got := addressFor(addrs, tc.addr, tc.d); got != tc.want {
			t.Errorf("%s: addressFor = %s, want %s", tc.desc, got, tc.want)
		}
	}
}

// A proof offers the classic key exchanges first (cheaper by half for the
// client); a proxy that accepts only a post-quantum one is still proven, on
// a second handshake with crypto/tls's defaults.
func TestPresentOffersClassicGroupsThenTheDefaults(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		groups []tls.CurveID // the server's
		offers int           // handshakes the server sees
	}{
		{desc: "a proxy with the usual groups: one handshake", groups: nil, offers: 1},
		{desc: "a proxy with only X25519MLKEM768: the defaults after the classic ones", groups: []tls.CurveID{tls.X25519MLKEM768}, offers: 2},
	} {
		cert, fp := selfSignedCert(t, "a.example.com")
		var mu sync.Mutex
		hellos := 0
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, CurvePreferences: tc.groups,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil },
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				mu.Lock()
				hellos++
				mu.Unlock()
				return nil, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		go handshakeAll(ln)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := present(ctx, ln.Addr().String(), "a.example.com")
		cancel()
		ln.Close()
		mu.Lock()
		got := hellos
		mu.Unlock()
		if err != nil || s.Fingerprint != fp || got != tc.offers {
			t.Errorf("%s: present = %q, %v after %d handshakes; want %q after %d", tc.desc, s.Fingerprint, err, got, fp, tc.offers)
		}
	}
}
