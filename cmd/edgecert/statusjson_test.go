package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// statusOf is a status document of n certificates, each with a history and
// a reload report, and text that JSON escapes and the redactor changes.
func statusOf(n int) StatusDoc {
	doc := StatusDoc{Version: "v1", Directory: "https://acme.test/dir?token=dir-secret-1", Certificates: []CertView{},
		Problems: []dockerwatch.Problem{{Container: "app<1>", Label: "edgecert.domains", Err: "bad & worse"}}}
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for i := range n {
		name := fmt.Sprintf("site%04d", i)
		var hist []acme.Event
		for k := range 20 {
			hist = append(hist, acme.Event{At: at.Add(time.Duration(k) * time.Hour), Kind: acme.EventIssued, Serial: "0a1b2c", Detail: "new certificate (http-01) <ok> & the-dns-token-9 again"})
		}
		doc.Certificates = append(doc.Certificates, CertView{
			CertStatus: acme.CertStatus{Name: name, Domains: []string{name + ".example.com"}, State: acme.StateValid, Serial: "0a1b2c",
				NotAfter: at.Add(90 * 24 * time.Hour), LastError: "GET https://api.dns.test/x?key=abc failed: the-dns-token-9", History: hist},
			Reloads: []signal.Report{{Container: "nginx", Certs: []string{name}, At: at, OK: true,
				Steps: []signal.Step{{Step: "config_test", OK: true, TookMS: 80}, {Step: "handshake", OK: true, TookMS: 3, Detail: name + ": serial 0a1b2c"}}}},
		})
	}
	return doc
}

// status --json streamed is byte for byte what one document encoded and
// redacted whole was, for none, one and many certificates.
func TestStatusStreamedIsTheWholeDocument(t *testing.T) {
	red := newRedactor([]string{"the-dns-token-9"})
	for _, n := range []int{0, 1, 3} {
		doc := statusOf(n)
		whole, streamed := httptest.NewRecorder(), httptest.NewRecorder()
		writeJSON(whole, red, http.StatusOK, doc)
		writeStatus(streamed, red, doc)
		if whole.Body.String() != streamed.Body.String() {
			t.Fatalf("%d certificates: streamed\n%s\nwant\n%s", n, streamed.Body, whole.Body)
		}
		if strings.Contains(streamed.Body.String(), "the-dns-token-9") || strings.Contains(streamed.Body.String(), "dir-secret-1") ||
			streamed.Code != http.StatusOK || streamed.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d certificates: code %d, type %q, body with a secret:\n%s", n, streamed.Code, streamed.Header().Get("Content-Type"), streamed.Body)
		}
	}
}

// discard is a ResponseWriter that keeps nothing: the benchmarks measure
// what the encoder holds, not the recorder.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}

// BenchmarkStatusJSON1000: the status of 1,000 certificates written whole
// and streamed; B/op is what each holds (the document itself is built
// before either).
func BenchmarkStatusJSON1000(b *testing.B) {
	doc := statusOf(1000)
	red := newRedactor([]string{"the-dns-token-9"})
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			writeJSON(discard{http.Header{}}, red, http.StatusOK, doc)
		}
	})
	b.Run("streamed", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			writeStatus(discard{http.Header{}}, red, doc)
		}
	})
}
