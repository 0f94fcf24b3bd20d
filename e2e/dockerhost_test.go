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
}

func newFilterProxy(t *testing.T) *filterProxy {
	t.Helper()
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &filterProxy{addr: ln.Addr().String(), allowed: map[string]int{}}
	target, _ := url.Parse("http://docker")
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // the event stream must flow as it comes
	rp.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", "/var/run/docker.sock")
	}}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := apiVersion.ReplaceAllString(r.URL.Path, "")
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
	if err := waitUntil(90*time.Second, func() error { _, err := s.verified(roots, d); return err }); err != nil {
		t.Fatalf("never served through the filtered API: %v", err)
	}
	s.waitDeployed("site")
	if out, code := s.cli("renew", "--force", "site"); code != 0 || !strings.Contains(out, "proven") {
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
