package legoissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// hangingCA is an ACME server that registers accounts and then holds every
// new order until the client gives up.
func hangingCA(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var orders atomic.Int32
	release := make(chan struct{})
	var srv *httptest.Server
	var nonce atomic.Int64
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("n%d", nonce.Add(1)))
		switch r.URL.Path {
		case "/dir":
			_ = json.NewEncoder(w).Encode(map[string]string{"newNonce": srv.URL + "/nonce", "newAccount": srv.URL + "/acct", "newOrder": srv.URL + "/order"})
		case "/nonce":
			w.WriteHeader(http.StatusOK)
		case "/acct":
			w.Header().Set("Location", srv.URL+"/acct/1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"status":"valid"}`)
		case "/order":
			orders.Add(1)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv, &orders
}

func TestObtainStopsWhenItsContextEnds(t *testing.T) {
	srv, orders := hangingCA(t)
	dir := t.TempDir()
	iss := issuerFor(t, srv, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := iss.Obtain(ctx, acme.Order{Domains: []string{"a.example.com"}})
		done <- err
	}()
	deadline := time.After(30 * time.Second)
	for orders.Load() == 0 {
		select {
		case err := <-done:
			t.Fatalf("Obtain ended before its order reached the CA: %v", err)
		case <-deadline:
			t.Fatal("the order never reached the CA")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	// The CA holds the order until the test ends: only the cancellation can
	// end Obtain.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Obtain = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Obtain still waits on the CA after its context was cancelled")
	}
}

// finalizingCA is an ACME server whose orders need no authorization: each
// is ready at once, and finalize calls onFinalize before it answers (after
// a pause), then the certificate is served.
func finalizingCA(t *testing.T, chain []byte, onFinalize func()) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	srv, orders, _ := refusingCA(t, chain, onFinalize, nil)
	return srv, orders
}

// refusingCA is finalizingCA refusing, as Pebble does, a new-order request
// for which refuse(its replaces field) is true with a 500 serverInternal
// that creates no order; it returns the orders created and the replaces
// field of every request, in order.
func refusingCA(t *testing.T, chain []byte, onFinalize func(), refuse func(replaces string) bool) (*httptest.Server, *atomic.Int32, func() []string) {
	t.Helper()
	var orders atomic.Int32
	var mu sync.Mutex
	var asked []string
	var srv *httptest.Server
	var nonce atomic.Int64
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("n%d", nonce.Add(1)))
		w.Header().Set("Content-Type", "application/json")
		order := func(status string) string {
			return fmt.Sprintf(`{"status":%q,"identifiers":[{"type":"dns","value":"a.example.com"}],"authorizations":[],"finalize":%q,"certificate":%q}`,
				status, srv.URL+"/finalize/1", srv.URL+"/cert/1")
		}
		switch r.URL.Path {
		case "/dir":
			_ = json.NewEncoder(w).Encode(map[string]string{"newNonce": srv.URL + "/nonce", "newAccount": srv.URL + "/acct", "newOrder": srv.URL + "/order", "renewalInfo": srv.URL + "/ari"})
		case "/nonce":
			w.WriteHeader(http.StatusOK)
		case "/acct":
			w.Header().Set("Location", srv.URL+"/acct/1")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"status":"valid"}`)
		case "/order":
			var jws struct{ Payload string }
			var req struct{ Replaces string }
			if err := json.NewDecoder(r.Body).Decode(&jws); err != nil {
				t.Errorf("new order: %v", err)
			}
			payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
			if err != nil || json.Unmarshal(payload, &req) != nil {
				t.Errorf("new order payload %q: %v", jws.Payload, err)
			}
			mu.Lock()
			asked = append(asked, req.Replaces)
			mu.Unlock()
			if refuse != nil && refuse(req.Replaces) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"could not find an order for the given certificate: could not find order resulting in the given certificate serial number","status":500}`)
				return
			}
			orders.Add(1)
			w.Header().Set("Location", srv.URL+"/order/1")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, order("ready"))
		case "/order/1":
			_, _ = io.WriteString(w, order("ready"))
		case "/finalize/1":
			onFinalize()
			time.Sleep(200 * time.Millisecond) // the order's context is gone by the answer
			w.Header().Set("Location", srv.URL+"/order/1")
			_, _ = io.WriteString(w, order("valid"))
		case "/cert/1":
			w.Header().Set("Content-Type", "application/pem-certificate-chain")
			_, _ = w.Write(chain)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &orders, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(asked) }
}

// A CA that refuses an order's replaces field (RFC 9773: alreadyReplaced, or
// Pebble v2.10.1's 500 for a serial whose DER encoding starts with a zero
// byte) gets the order once more without it, and only once: a plain order
// refused too is not placed a third time.
func TestARefusedReplacementIsOrderedOnceWithoutReplaces(t *testing.T) {
	old, err := x509.ParseCertificate(pemBlock(t, selfSigned(t, "a.example.com")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc       string
		refuse     func(replaces string) bool
		wantErr    bool
		wantOrders int32
	}{
		{desc: "a replacement refused, the plain order served", refuse: func(r string) bool { return r != "" }, wantOrders: 1},
		{desc: "every order refused", refuse: func(string) bool { return true }, wantErr: true, wantOrders: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			chain := selfSigned(t, "a.example.com")
			srv, orders, asked := refusingCA(t, chain, func() {}, tc.refuse)
			iss := issuerFor(t, srv, dir)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			got, _, err := iss.Obtain(ctx, acme.Order{Domains: []string{"a.example.com"}, Replaces: old})
			if (err != nil) != tc.wantErr || (err == nil && string(got) != string(chain)) {
				t.Errorf("Obtain: %v (chain served: %v); want an error: %v", err, string(got) == string(chain), tc.wantErr)
			}
			a := asked()
			if len(a) != 2 || a[0] == "" || a[1] != "" {
				t.Errorf("new-order requests' replaces fields %q; want one naming the old certificate, then one without", a)
			}
			if n := orders.Load(); n != tc.wantOrders {
				t.Errorf("%d orders created, want %d", n, tc.wantOrders)
			}
		})
	}
}

// pemBlock is the DER of p's first PEM block.
func pemBlock(t *testing.T, p []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

// Finding 4 of issue 19: an order whose context ended after finalize (a lost
// cluster lease, a stop, its deadline) threw the issued certificate away.
// From finalize on, the order finishes on a context of its own.
func TestObtainKeepsACertificateFinalizedAsItsContextEnds(t *testing.T) {
	dir := t.TempDir()
	chain := selfSigned(t, "a.example.com")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, orders := finalizingCA(t, chain, cancel)
	iss := issuerFor(t, srv, dir)
	done := make(chan error, 1)
	var got []byte
	go func() {
		var err error
		got, _, err = iss.Obtain(ctx, acme.Order{Domains: []string{"a.example.com"}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || string(got) != string(chain) {
			t.Fatalf("Obtain after its context ended at finalize: %v (chain kept: %v)", err, string(got) == string(chain))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Obtain never returned")
	}
	if ctx.Err() == nil || orders.Load() != 1 {
		t.Errorf("context ended: %v; %d orders, want 1", ctx.Err() != nil, orders.Load())
	}
}

// selfSigned is a PEM certificate for name.
func selfSigned(t *testing.T, name string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// issuerFor is an Issuer ordering from the test CA srv, trusting its TLS
// certificate, with its webroot and state in dir.
func issuerFor(t *testing.T, srv *httptest.Server, dir string) *Issuer {
	t.Helper()
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	iss, err := New(Config{Directory: srv.URL + "/dir", KeyType: "ec256", Webroot: dir, StateDir: dir, RootsFile: roots},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func TestCommonName(t *testing.T) {
	long := strings.Repeat("a", 61) + ".test"
	for _, tc := range []struct {
		desc    string
		domains []string
		want    string
	}{
		{desc: "the first name", domains: []string{"a.test", "b.test"}, want: "a.test"},
		{desc: "a first name past 64 bytes: none", domains: []string{long, "b.test"}},
		{desc: "an address alone: none", domains: []string{"192.0.2.10"}},
		{desc: "a name and an address: none (Let's Encrypt refuses an address in the CN)", domains: []string{"a.test", "2001:db8::1"}},
	} {
		if got := commonName(tc.domains); got != tc.want {
			t.Errorf("%s: commonName = %q, want %q", tc.desc, got, tc.want)
		}
	}
}

// The request for a name and two addresses: the name a DNS SAN, the
// addresses IP SANs, no CN.
func TestCSRForAddresses(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := csrFor(k, []string{"a.test", "192.0.2.10", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range req.IPAddresses {
		ips = append(ips, ip.String())
	}
	if req.Subject.CommonName != "" || !slices.Equal(req.DNSNames, []string{"a.test"}) || !slices.Equal(ips, []string{"192.0.2.10", "2001:db8::1"}) {
		t.Errorf("CSR: CN %q, DNS %v, IP %v; want no CN, a.test, the two addresses", req.Subject.CommonName, req.DNSNames, ips)
	}
}

func TestCheckProfile(t *testing.T) {
	offered := map[string]string{"classic": "", "shortlived": "", "tlsserver": ""}
	for _, tc := range []struct {
		desc    string
		profile string
		offered map[string]string
		domains []string
		wantErr string
	}{
		{desc: "offered", profile: "shortlived", offered: offered, domains: []string{"192.0.2.10"}},
		{desc: "the CA's default", offered: offered, domains: []string{"a.test"}},
		{desc: "a CA that lists none: the CA decides", profile: "shortlived", domains: []string{"192.0.2.10"}},
		{desc: "a typo", profile: "clasic", offered: offered, domains: []string{"a.test"}, wantErr: `the CA offers no profile "clasic" (it offers: classic, shortlived, tlsserver); no order placed`},
		{desc: "an address, the CA names its short-lived profile otherwise", profile: "shortlived", offered: map[string]string{"default": "", "short": ""},
			domains: []string{"a.test", "192.0.2.10"}, wantErr: "a certificate for an IP address needs the CA's short-lived profile: set edgecert.profile, or EDGECERT_IP_PROFILE"},
	} {
		err := checkProfile(tc.profile, tc.offered, tc.domains)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: checkProfile = %v, want %q", tc.desc, err, tc.wantErr)
		}
	}
}
