package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecert/edgecert/signal"
)

type proxyList []signal.Proxy

func (p proxyList) Proxies() []signal.Proxy { return p }

// fakeProbe answers for each proxy by name, and checks that the token it
// is asked for is on disk while it is asked.
type fakeProbe struct {
	t       *testing.T
	webroot string
	answers map[string]error
	asked   []string
}

func (f *fakeProbe) ServesFile(_ context.Context, p signal.Proxy, port int, host, path string, want []byte) error {
	f.asked = append(f.asked, p.Name+" "+host)
	if got, err := os.ReadFile(filepath.Join(f.webroot, path)); err != nil || string(got) != string(want) || port != 80 {
		f.t.Errorf("probe for %s: token file %q, %v on port %d; want %q on port 80", host, got, err, port, want)
	}
	return f.answers[p.Name]
}

func TestChallengePreflight(t *testing.T) {
	notServed := errors.New("GET http://a.example.com/.well-known/acme-challenge/x answered 404")
	tests := []struct {
		desc    string
		proxies proxyList
		answers map[string]error
		wantErr string
	}{
		{desc: "no proxy: nothing to check", wantErr: ""},
		{desc: "one proxy serves it", proxies: proxyList{{Name: "nginx"}}, answers: map[string]error{}, wantErr: ""},
		{desc: "one of two serves it", proxies: proxyList{{Name: "broken"}, {Name: "nginx"}}, answers: map[string]error{"broken": notServed}},
		{desc: "none serves it: the location to add and what was seen", proxies: proxyList{{Name: "nginx"}},
			answers: map[string]error{"nginx": notServed}, wantErr: "location ^~ /.well-known/acme-challenge/"},
		{desc: "unreachable proxy: let the CA decide", proxies: proxyList{{Name: "nginx"}}, answers: map[string]error{"nginx": signal.ErrNoSharedNetwork}},
		{desc: "redirected to another host: let the CA decide", proxies: proxyList{{Name: "nginx"}}, answers: map[string]error{"nginx": signal.ErrRedirectedAway}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			webroot := t.TempDir()
			probe := &fakeProbe{t: t, webroot: webroot, answers: tc.answers}
			c := &challengePreflight{webroot: webroot, proxies: tc.proxies, probe: probe, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			err := c.Preflight(context.Background(), []string{"a.example.com"})
			if (err == nil) != (tc.wantErr == "") || (err != nil && (!strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "404"))) {
				t.Errorf("Preflight = %v, want an error containing %q", err, tc.wantErr)
			}
			if len(tc.proxies) > 0 && len(probe.asked) == 0 {
				t.Errorf("no proxy was asked")
			}
			left, _ := filepath.Glob(filepath.Join(webroot, ".well-known", "acme-challenge", "*"))
			if len(left) != 0 {
				t.Errorf("probe tokens left in the webroot: %v", left)
			}
		})
	}
}
