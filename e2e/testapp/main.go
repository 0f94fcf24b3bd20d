// Command testapp is a stand-in application for the e2e tests and the local
// demo: an HTTP server that says who it is. Run as `testapp dump-env FILE`
// it writes its EDGECERT_* and RENEWED_* environment to FILE and exits: a
// deploy hook.
// Run as `testapp sleep SECONDS` it sleeps: a config test that hangs.
// Run as `testapp files DIR` it serves DIR on :8080 (HTTP-01 tokens behind
// a proxy that serves no files itself, as HAProxy).
// Run as `testapp acme-relay UPSTREAM CERT KEY [no-ari]` it serves HTTPS on
// :14000 and relays every request to the ACME server at UPSTREAM
// (https://host:port), keeping the Host header (so the CA's URLs name the
// relay); with no-ari, renewalInfo is removed from the directory (a CA
// without ARI). On :8081, GET /cut?for=DURATION fails every request in
// flight and refuses new ones for that long, and GET /latency?d=DURATION
// delays each request: a CA that goes away mid-order or mid-download.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "sleep" {
		n, _ := strconv.Atoi(os.Args[2])
		time.Sleep(time.Duration(n) * time.Second)
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "files" {
		srv := &http.Server{Addr: ":8080", Handler: http.FileServer(http.Dir(os.Args[2])), ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	}
	if len(os.Args) >= 5 && os.Args[1] == "acme-relay" {
		fmt.Fprintln(os.Stderr, acmeRelay(os.Args[2], os.Args[3], os.Args[4], len(os.Args) > 5 && os.Args[5] == "no-ari"))
		os.Exit(1)
	}
	if len(os.Args) == 3 && os.Args[1] == "dump-env" {
		var lines []string
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "EDGECERT_") || strings.HasPrefix(kv, "RENEWED_") {
				lines = append(lines, kv)
			}
		}
		sort.Strings(lines)
		if err := os.WriteFile(os.Args[2], []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	name := os.Getenv("APP_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	srv := &http.Server{Addr: ":8080", ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// relayFaults are the faults the relay is told to make.
type relayFaults struct {
	mu       sync.Mutex
	cutUntil time.Time
	latency  time.Duration
	gen      context.Context // cancelled at each cut: the requests in flight fail
	cancel   context.CancelFunc
}

func (f *relayFaults) now() (cut bool, latency time.Duration, gen context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.cutUntil), f.latency, f.gen
}

func (f *relayFaults) control(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/cut":
		d, _ := time.ParseDuration(r.URL.Query().Get("for"))
		f.cutUntil = time.Now().Add(d)
		f.cancel()
		f.gen, f.cancel = context.WithCancel(context.Background())
	case "/latency":
		f.latency, _ = time.ParseDuration(r.URL.Query().Get("d"))
	default:
		http.NotFound(w, r)
		return
	}
	fmt.Fprintln(w, "ok")
}

// acmeRelay relays to the ACME server at upstream, with the faults it is
// told to make, and without renewalInfo in its directory if noARI.
func acmeRelay(upstream, cert, key string, noARI bool) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host // the CA builds its URLs from it: they name the relay
	}}
	// The upstream is the test's own CA on the test network.
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !noARI || resp.Request.URL.Path != "/dir" {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var dir map[string]any
		if err := json.Unmarshal(body, &dir); err == nil {
			delete(dir, "renewalInfo")
			body, _ = json.Marshal(dir)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Del("Content-Length")
		return nil
	}
	f := &relayFaults{}
	f.gen, f.cancel = context.WithCancel(context.Background())
	ctl := &http.Server{Addr: ":8081", Handler: http.HandlerFunc(f.control), ReadHeaderTimeout: 5 * time.Second}
	go func() { fmt.Fprintln(os.Stderr, ctl.ListenAndServe()) }()
	relay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cut, latency, gen := f.now()
		if cut {
			http.Error(w, "the relay is cut", http.StatusBadGateway)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(gen, cancel)
		defer stop()
		select {
		case <-time.After(latency):
		case <-ctx.Done():
			return
		}
		proxy.ServeHTTP(w, r.WithContext(ctx))
	})
	srv := &http.Server{Addr: ":14000", Handler: relay, ReadHeaderTimeout: 5 * time.Second}
	return srv.ListenAndServeTLS(cert, key)
}
