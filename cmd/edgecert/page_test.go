package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
	"golang.org/x/crypto/bcrypt"
)

// pageDoc is a pageSource serving a document the test changes.
type pageDoc struct {
	mu  sync.Mutex
	doc StatusDoc
}

func (s *pageDoc) status() StatusDoc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doc
}

func (s *pageDoc) set(doc StatusDoc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc = doc
}

func (s *pageDoc) versions(string) ([]*acme.Info, error) { return nil, nil }

var pageNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func validCert(name string, issued time.Time, life time.Duration) CertView {
	return CertView{CertStatus: acme.CertStatus{Name: name, Domains: []string{name + ".example.com"}, State: acme.StateValid,
		Serial: "0a" + name, Issuer: "Pebble Intermediate", NotBefore: issued, NotAfter: issued.Add(life),
		RenewAt: issued.Add(life * 2 / 3), RenewSource: acme.SourceRatio, KeyType: "ec256", Challenge: "http-01",
		History: []acme.Event{{At: issued, Kind: acme.EventIssued, Serial: "0a" + name}}}, Reloads: []signal.Report{}}
}

func newTestPage(t testing.TB, src pageSource, auth *htpasswd) *statusPage {
	t.Helper()
	p, err := newStatusPage(src, newRedactor([]string{"s3cr3t-token-value"}), auth, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return pageNow }
	return p
}

func get(t testing.TB, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
	return w
}

func TestTimelineGeometry(t *testing.T) {
	a := axis{From: pageNow, To: pageNow.Add(100 * 24 * time.Hour)}
	for _, tc := range []struct {
		desc string
		at   time.Time
		want float64
	}{
		{desc: "the axis's start", at: pageNow, want: 0},
		{desc: "its end", at: pageNow.Add(100 * 24 * time.Hour), want: timelineWidth},
		{desc: "a quarter in", at: pageNow.Add(25 * 24 * time.Hour), want: timelineWidth / 4},
		{desc: "before the start: clamped", at: pageNow.Add(-time.Hour), want: 0},
		{desc: "past the end: clamped", at: pageNow.Add(1000 * 24 * time.Hour), want: timelineWidth},
	} {
		if got := a.x(tc.at); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: x = %v, want %v", tc.desc, got, tc.want)
		}
	}

	// A certificate issued 30 days ago for 90 days, renewed once before:
	// its bar starts at NotBefore and ends at NotAfter on the axis the rows
	// need; the past version is a faded segment before it.
	c := validCert("a", pageNow.Add(-30*24*time.Hour), 90*24*time.Hour)
	c.History = append([]acme.Event{{At: pageNow.Add(-90 * 24 * time.Hour), Kind: acme.EventIssued, Serial: "old"},
		{At: pageNow.Add(-40 * 24 * time.Hour), Kind: acme.EventOrderFailed, Detail: "refused"}}, c.History...)
	c.ARI = &acme.ARIWindow{Start: pageNow.Add(29 * 24 * time.Hour), End: pageNow.Add(31 * 24 * time.Hour)}
	tv := buildTimeline([]CertView{c}, pageNow)
	ax := axisFor([]CertView{c}, pageNow)
	if !ax.From.Equal(pageNow.Add(-90*24*time.Hour)) || !ax.To.Equal(c.NotAfter) {
		t.Fatalf("axis %v to %v; want the past version's issue to the current one's expiry", ax.From, ax.To)
	}
	row := tv.Rows[0]
	if len(row.Segments) != 2 || row.Segments[0].Current || !row.Segments[1].Current {
		t.Fatalf("segments %+v; want a past one, then the current one", row.Segments)
	}
	cur := row.Segments[1]
	if math.Abs(cur.X-ax.x(c.NotBefore)) > 1e-9 || math.Abs(cur.X+cur.W-ax.x(c.NotAfter)) > 1e-9 {
		t.Errorf("current bar %v to %v; want %v to %v", cur.X, cur.X+cur.W, ax.x(c.NotBefore), ax.x(c.NotAfter))
	}
	past := row.Segments[0]
	if past.X != 0 || math.Abs(past.X+past.W-ax.x(c.NotBefore)) > 1e-9 {
		t.Errorf("past bar %v to %v; want 0 to the current one's issue %v", past.X, past.X+past.W, ax.x(c.NotBefore))
	}
	if math.Abs(tv.NowX-ax.x(pageNow)) > 1e-9 || math.Abs(row.RenewX-ax.x(c.RenewAt)) > 1e-9 {
		t.Errorf("now at %v (want %v), renewal at %v (want %v)", tv.NowX, ax.x(pageNow), row.RenewX, ax.x(c.RenewAt))
	}
	if row.Window == nil || math.Abs(row.Window.X-ax.x(c.ARI.Start)) > 1e-9 || len(row.Failures) != 1 {
		t.Errorf("window %+v, failures %+v; want the ARI window and one failure mark", row.Window, row.Failures)
	}
}

func TestPageEscapesWhatComesFromOutside(t *testing.T) {
	const evil = `<img src=x onerror="window.pwned=1">`
	c := validCert("a", pageNow.Add(-time.Hour), 90*24*time.Hour)
	c.Containers = []string{evil}
	c.Hint = evil
	c.LastError = "order: " + evil + " token=s3cr3t-token-value"
	doc := StatusDoc{Version: "test", Certificates: []CertView{c},
		Problems: []dockerwatch.Problem{{Container: evil, Label: "edgecert.domains", Err: evil}},
		Proxies:  []ProxyView{{Name: evil, Running: true, LastReload: &signal.Report{Container: evil, Error: evil, At: pageNow}}}}
	p := newTestPage(t, &pageDoc{doc: doc}, nil)
	for _, target := range []string{"/", "/?part=main", "/?q=" + strings.ReplaceAll(evil, " ", "+"), "/cert/a"} {
		w := get(t, p.handler(context.Background()), target)
		body := w.Body.String()
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", target, w.Code, body)
		}
		if strings.Contains(body, "<img") || strings.Contains(body, `onerror="`) {
			t.Errorf("%s: the label's markup reached the page unescaped", target)
		}
		if strings.Contains(body, "s3cr3t-token-value") {
			t.Errorf("%s: a secret reached the page", target)
		}
		if target == "/" && !strings.Contains(body, "&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;") {
			t.Errorf("%s: the label's value is not shown as text", target)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", target, csp)
		}
	}
	if w := get(t, p.handler(context.Background()), "/cert/nope"); w.Code != http.StatusNotFound {
		t.Errorf("an unknown certificate: %d, want 404", w.Code)
	}
}

// thousandCerts is a document of n certificates issued over the last 60
// days, each with a history of a few renewals and a proxy's proof.
func thousandCerts(n int) StatusDoc {
	doc := StatusDoc{Version: "test", Docker: dockerwatch.Health{Connected: true, LastSync: pageNow}}
	for i := range n {
		c := validCert("c"+strconv.Itoa(i), pageNow.Add(-time.Duration(i%60)*24*time.Hour), 90*24*time.Hour)
		c.Domains = []string{c.Name + ".example.com", "www." + c.Name + ".example.com", "api." + c.Name + ".example.com", "cdn." + c.Name + ".example.com"}
		c.Reloads = []signal.Report{{Container: "nginx", OK: true, At: pageNow.Add(-time.Minute)}}
		doc.Certificates = append(doc.Certificates, c)
	}
	return doc
}

func TestPageAtAThousandCertificates(t *testing.T) {
	p := newTestPage(t, &pageDoc{doc: thousandCerts(1000)}, nil)
	w := get(t, p.handler(context.Background()), "/")
	body := w.Body.String()
	if n := strings.Count(body, `<tr class="state-valid`); n != pageRows {
		t.Errorf("%d rows on the first page, want %d", n, pageRows)
	}
	if !strings.Contains(body, `href="./?page=20"`) {
		t.Error("no link to the 20th page")
	}
	if len(body) > 100_000 {
		t.Errorf("the page is %d bytes at 1,000 certificates; want under 100 KB", len(body))
	}
	// Sorted by expiry: the first row expires first (c59, c119, ... were
	// issued on the same day, longest ago; the name breaks the tie).
	first := regexp.MustCompile(`<tr class="state-valid[^"]*" data-cert="([^"]+)"`).FindStringSubmatch(body)
	if first == nil || first[1] != "c119" {
		t.Errorf("first row %v; want c119", first)
	}
	if w := get(t, p.handler(context.Background()), "/?q=c999"); strings.Count(w.Body.String(), `<tr class="state-valid`) != 1 {
		t.Error("the filter c999 does not keep exactly one row")
	}
}

// BenchmarkStatusPageThousand renders the overview at 1,000 certificates
// (server side, redaction included) and reports its size.
func BenchmarkStatusPageThousand(b *testing.B) {
	p := newTestPage(b, &pageDoc{doc: thousandCerts(1000)}, nil)
	h := p.handler(context.Background())
	var size int
	for b.Loop() {
		size = get(b, h, "/").Body.Len()
	}
	b.ReportMetric(float64(size)/1000, "page-kB")
}

func TestPageAsksForThePassword(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte("# operators\nops:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := readHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	h := newTestPage(t, &pageDoc{doc: thousandCerts(1)}, auth).handler(context.Background())
	for _, tc := range []struct {
		desc       string
		user, pass string
		want       int
	}{
		{desc: "no credentials", want: http.StatusUnauthorized},
		{desc: "a wrong password", user: "ops", pass: "wrong", want: http.StatusUnauthorized},
		{desc: "an unknown user", user: "root", pass: "right horse", want: http.StatusUnauthorized},
		{desc: "the right ones", user: "ops", pass: "right horse", want: http.StatusOK},
		{desc: "the right ones again (remembered)", user: "ops", pass: "right horse", want: http.StatusOK},
	} {
		for _, target := range []string{"/", "/status.json", "/page.js"} {
			r := httptest.NewRequest("GET", target, nil)
			if tc.user != "" {
				r.SetBasicAuth(tc.user, tc.pass)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s, %s: %d, want %d", tc.desc, target, w.Code, tc.want)
			}
		}
	}
	for _, bad := range []string{"ops:$apr1$abc$def\n", "ops\n", "# nobody\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readHtpasswd(path); err == nil {
			t.Errorf("htpasswd %q accepted; want an error", bad)
		}
	}
}

func TestPageEventsTellAChange(t *testing.T) {
	src := &pageDoc{doc: thousandCerts(2)}
	srv := httptest.NewServer(newTestPage(t, src, nil).handler(context.Background()))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	changed := thousandCerts(2) // a new document, as the daemon makes one per call
	changed.Certificates[0].Serial = "0bnew"
	src.set(changed)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the stream ended before a change event")
			}
			if l == "event: change" {
				return
			}
		case <-ctx.Done():
			t.Fatal("no change event within 30 s of the document's change")
		}
	}
}
