package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// allowedDocker is README's list of the Docker API endpoints edgecert calls.
var allowedDocker = []struct {
	method string
	path   *regexp.Regexp
}{
	{"HEAD", regexp.MustCompile(`^/_ping$`)},
	{"GET", regexp.MustCompile(`^/_ping$`)},
	{"GET", regexp.MustCompile(`^/version$`)},
	{"GET", regexp.MustCompile(`^/containers/json$`)},
	{"GET", regexp.MustCompile(`^/events$`)},
	{"GET", regexp.MustCompile(`^/containers/[^/]+/json$`)},
	{"GET", regexp.MustCompile(`^/containers/[^/]+/top$`)},
	{"POST", regexp.MustCompile(`^/containers/[^/]+/exec$`)},
	{"POST", regexp.MustCompile(`^/exec/[^/]+/start$`)},
	{"GET", regexp.MustCompile(`^/exec/[^/]+/json$`)},
	{"POST", regexp.MustCompile(`^/containers/[^/]+/kill$`)},
}

var apiVersion = regexp.MustCompile(`^/v[0-9.]+`)

// filterProxy is a Docker API proxy on TCP that forwards only the allowed
// endpoints to the engine's socket, as a socket proxy in production would.
type filterProxy struct {
	addr     string
	mu       sync.Mutex
	allowed  map[string]int
	rejected []string
	down     bool                  // cut: every request fails, as with an engine restarting
	stalled  bool                  // /events: new requests get no answer, open streams deliver nothing
	conns    map[net.Conn]struct{} // open client connections, closed by cut
}

// cut drops every connection (the event stream with them) and fails every
// request until restore.
func (f *filterProxy) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for c := range f.conns {
		c.Close()
	}
}

// stall makes the engine's /events hang without a word (on) or flow again
// (off): the connection stays open, nothing comes.
func (f *filterProxy) stall(on bool) {
	f.mu.Lock()
	f.stalled = on
	f.mu.Unlock()
}

// waitUnstalled blocks while /events is stalled, or until ctx ends.
func (f *filterProxy) waitUnstalled(ctx context.Context) error {
	for {
		f.mu.Lock()
		stalled := f.stalled
		f.mu.Unlock()
		if !stalled {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stallWriter holds back an event stream's writes while it is stalled.
type stallWriter struct {
	http.ResponseWriter
	f   *filterProxy
	ctx context.Context
}

func (w stallWriter) Write(p []byte) (int, error) {
	if err := w.f.waitUnstalled(w.ctx); err != nil {
		return 0, err
	}
	return w.ResponseWriter.Write(p)
}

func (w stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (f *filterProxy) restore() {
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
}

func newFilterProxy(t *testing.T) *filterProxy {
	t.Helper()
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &filterProxy{addr: ln.Addr().String(), allowed: map[string]int{}, conns: map[net.Conn]struct{}{}}
	target, _ := url.Parse("http://docker")
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // the event stream must flow as it comes
	rp.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", "/var/run/docker.sock")
	}}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.down
		f.mu.Unlock()
		if down {
			http.Error(w, "the e2e filter is cut off from the engine", http.StatusServiceUnavailable)
			return
		}
		path := apiVersion.ReplaceAllString(r.URL.Path, "")
		if path == "/events" {
			if f.waitUnstalled(r.Context()) != nil {
				return
			}
			w = stallWriter{ResponseWriter: w, f: f, ctx: r.Context()}
		}
		for _, a := range allowedDocker {
			if r.Method == a.method && a.path.MatchString(path) {
				f.mu.Lock()
				f.allowed[a.method+" "+a.path.String()]++
				f.mu.Unlock()
				rp.ServeHTTP(w, r)
				return
			}
		}
		f.mu.Lock()
		f.rejected = append(f.rejected, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		http.Error(w, "endpoint not allowed by the e2e filter", http.StatusForbidden)
	})}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch st {
		case http.StateNew:
			f.conns[c] = struct{}{}
		case http.StateClosed, http.StateHijacked:
			delete(f.conns, c)
		}
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

// TestDockerHostThroughFilter: edgecert reaches the engine over
// DOCKER_HOST=tcp://... through a proxy that refuses every endpoint not in
// README's list, and still does the whole loop.
func TestDockerHostThroughFilter(t *testing.T) {
	t.Parallel()
	f := newFilterProxy(t)
	s := newStack(t, "tcp")
	s.noSocket = true
	d := s.domain("site")
	s.point(d)
	s.startNginx()
	s.startEdgecert("DOCKER_HOST=tcp://" + f.addr)
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", d))
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	if err := waitUntil(150*time.Second, func() error { _, err := s.verified(roots, d); return err }); err != nil {
		t.Fatalf("never served through the filtered API: %v", err)
	}
	s.waitDeployed("site")
	if out, code := s.renew("--force", "site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force: exit %d:\n%s", code, out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var used []string
	for k, n := range f.allowed {
		used = append(used, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(used)
	t.Logf("MEASURE docker_api_calls %s", strings.Join(used, " "))
	if len(f.rejected) > 0 {
		t.Errorf("edgecert called endpoints outside README's list: %v", f.rejected)
	}
	for _, must := range []string{"GET ^/events$", "GET ^/containers/json$", "POST ^/containers/[^/]+/kill$", "POST ^/exec/[^/]+/start$", "GET ^/containers/[^/]+/top$"} {
		if f.allowed[must] == 0 {
			t.Errorf("%s was never called through the proxy: the loop did not go through it", must)
		}
	}
}

// TestEventStreamCut: the Docker API goes away (as when the engine restarts)
// and a labelled container starts meanwhile. edgecert notices, reconnects
// with backoff, lists every container again, and serves the new container's
// domain; the certificate it already had is neither lost nor re-ordered.
func TestEventStreamCut(t *testing.T) {
	t.Parallel()
	f := newFilterProxy(t)
	s := newStack(t, "cut")
	s.noSocket = true
	d1, d2 := s.domain("one"), s.domain("two")
	s.point(d1, d2)
	s.startNginx()
	s.startEdgecert("DOCKER_HOST=tcp://" + f.addr)
	roots := caRoots(t, s.pebble)
	s.writeConf("10-one.conf", tlsServer("one", d1))
	s.startApp("one", map[string]string{"domains": d1, "name": "one"})
	first := s.waitServed(roots, d1, 150*time.Second)
	s.waitDeployed("one")
	s.writeConf("11-two.conf", tlsServer("two", d2)) // loaded with two's certificate

	f.cut()
	if err := waitUntil(30*time.Second, func() error {
		if out, code := s.cli("health"); code == 0 {
			return errString("still healthy: " + out)
		}
		return nil
	}); err != nil {
		t.Fatalf("edgecert did not notice that Docker went away: %v", err)
	}
	cutAt := time.Now()
	s.startApp("two", map[string]string{"domains": d2, "name": "two"}) // no event will tell edgecert
	if c, _ := s.cert("one"); c.State != "valid" || c.Serial != first {
		t.Errorf("while Docker is away: one = %+v, want still valid with serial %s", c, first)
	}
	f.restore()

	s.waitServed(roots, d2, 150*time.Second)
	t.Logf("MEASURE event_stream_cut new_domain_served_ms_after_cut=%d", time.Since(cutAt).Milliseconds())
	var doc statusDoc
	if err := waitUntil(30*time.Second, func() error {
		if out, code := s.cli("health"); code != 0 {
			return errString(out)
		}
		doc = s.status()
		return nil
	}); err != nil {
		t.Fatalf("not healthy after Docker came back: %v", err)
	}
	if doc.Docker.Reconnects < 1 {
		t.Errorf("status docker = %+v, want at least one reconnect", doc.Docker)
	}
	if c, _ := s.cert("one"); c.Serial != first || c.State != "valid" {
		t.Errorf("one = %+v, want kept with serial %s", c, first)
	}
	if n := strings.Count(s.logs(), "certificate obtained and written"); n != 2 {
		t.Errorf("%d certificates obtained, want 2 (one each)", n)
	}
	if !strings.Contains(s.logs(), "docker event stream lost") {
		t.Errorf("no log line about the lost event stream")
	}
}
