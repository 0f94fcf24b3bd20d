package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// fill sets every field of the struct v points to to a value that is not
// zero, so that a conversion that drops a field is seen.
func fill(v any) {
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		f := rv.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(rv.Type().Field(i).Name + "-value")
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 7))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{rv.Type().Field(i).Name + "-item"}))
		}
	}
}

// sameFields fails for each field of from that to lacks or holds another value.
func sameFields(t *testing.T, from, to any, skip ...string) {
	t.Helper()
	fv, tv := reflect.ValueOf(from), reflect.ValueOf(to)
	for i := range fv.NumField() {
		name := fv.Type().Field(i).Name
		if strings.Contains(strings.Join(skip, ","), name) {
			continue
		}
		g := tv.FieldByName(name)
		if !g.IsValid() {
			t.Errorf("%s.%s has no counterpart in %s", fv.Type(), name, tv.Type())
			continue
		}
		if !reflect.DeepEqual(fv.Field(i).Interface(), g.Interface()) {
			t.Errorf("%s.%s = %v, carried as %v", fv.Type(), name, fv.Field(i), g)
		}
	}
}

func TestConversionsCarryEveryField(t *testing.T) {
	var p dockerwatch.Proxy
	fill(&p)
	sameFields(t, p, toProxy(p), "Running", "CombinedPEM") // only running proxies are handed on; combined.pem is acme's (through CertSpec)
	var c dockerwatch.CertSpec
	fill(&c)
	sameFields(t, c, toWant(c))
	var d acme.Deployment
	fill(&d)
	sameFields(t, d, toCert(d), "More") // More is how to batch it: Batcher.Deploy's argument
	// And the other way: nothing signal or acme takes is left unset.
	sameFields(t, toProxy(p), p)
	sameFields(t, toWant(c), c)
	sameFields(t, toCert(d), d)
}

// orderCounter is an issuer that refuses every order and counts them: the
// test only needs to know whether one was placed.
type orderCounter struct {
	mu      sync.Mutex
	domains []string
}

func (o *orderCounter) Obtain(_ context.Context, ord acme.Order) ([]byte, []byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.domains = append(o.domains, ord.Domains...)
	return nil, nil, errors.New("test CA: refused")
}

func (o *orderCounter) RenewalInfo(context.Context, *x509.Certificate) (*acme.RenewalInfo, error) {
	return nil, acme.ErrNoARI
}

func (o *orderCounter) ordered() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.domains...)
}

type nopDeployer struct{}

func (nopDeployer) Deploy(context.Context, acme.Deployment) error { return nil }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // generous: reached only when something is wrong
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestApplyFeedsBothStages(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := acme.NewStore(t.TempDir(), acme.DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	iss := &orderCounter{}
	m := acme.NewManager(acme.ManagerConfig{Directory: "https://ca.test/dir", StateDir: t.TempDir(), Store: store, Issuer: iss,
		Deployer: nopDeployer{}, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	b := signal.NewBatcher(signal.New(nil, signal.NginxDefaults(), log), time.Millisecond, nil)
	s := stages{manager: m, batcher: b, holds: &holds{manager: m}}

	// nginx labelled but not running yet: the certificate is wanted, its
	// placeholder written, and its order waits, saying why.
	snap := dockerwatch.Desired{
		Certs:   []dockerwatch.CertSpec{{Name: "site", Domains: []string{"site.example.com"}, Containers: []string{"app"}}},
		Proxies: []dockerwatch.Proxy{{ID: "n1", Name: "nginx", TLSPort: 443}},
	}
	s.apply(snap)
	eventually(t, "a waiting placeholder", func() bool {
		st := m.Status()
		return len(st) == 1 && st[0].State == acme.StatePlaceholder && strings.Contains(st[0].Waiting, "nginx")
	})
	if got := iss.ordered(); len(got) != 0 || len(b.Proxies()) != 0 {
		t.Fatalf("with no proxy running: orders %v, proxies %v; want none", got, b.Proxies())
	}

	// nginx runs: it is handed to signal, and the order goes out.
	snap.Proxies[0].Running = true
	s.apply(snap)
	eventually(t, "the order", func() bool { return len(iss.ordered()) == 1 })
	if ps := b.Proxies(); len(ps) != 1 || ps[0].Name != "nginx" {
		t.Fatalf("proxies handed to signal = %+v, want nginx", ps)
	}
	if st := m.Status(); st[0].Waiting != "" || st[0].Containers[0] != "app" {
		t.Errorf("status after the proxy started = %+v", st[0])
	}
}
