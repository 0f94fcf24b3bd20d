package signal

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
)

// fakeNginx is a pretend nginx container: a master whose workers are
// replaced on HUP (unless its config is broken), serving a real TLS listener.
type fakeNginx struct {
	workerCmd  string // default "nginx: worker process"
	masterCmd  string // default "nginx: master process ..."
	restarting bool

	mu           sync.Mutex
	workers      []string
	nextPID      int
	testExit     int
	hang         bool // the config test never ends
	mismatch     int  // the config test reports a key mismatch this many times first
	torn         int  // the config test's output stream breaks this many times first
	testExitOnce bool
	files        *sync.RWMutex // if set: the config test records whether it is held
	heldOK       bool          // the files were held (shared) during every config test
	flood        int64         // the config test writes this many bytes
	broken       bool          // HUP leaves workers as they are, as nginx does with a bad config
	kills        []string
	serving      *tls.Certificate
	pending      *tls.Certificate            // served after the next good HUP
	bySNI        map[string]*tls.Certificate // served for these names instead, whatever the HUPs
	ip, port     string
	startedAt    time.Time     // the container's start, as inspect says
	gate         chan struct{} // when set, each config test waits for it
	slow         time.Duration // each config test takes this long
}

func (f *fakeNginx) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{State: &container.State{Running: !f.restarting, Restarting: f.restarting, Pid: 1,
			StartedAt: f.startedAt.Format(time.RFC3339Nano)}, RestartCount: 7},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{"edge": {IPAddress: f.ip}}},
	}, nil
}

func (f *fakeNginx) ContainerTop(ctx context.Context, id string, _ []string) (container.TopResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	master, worker := cmp.Or(f.masterCmd, "nginx: master process nginx -g daemon off;"), cmp.Or(f.workerCmd, "nginx: worker process")
	resp := container.TopResponse{Titles: []string{"UID", "PID", "PPID", "CMD"},
		Processes: [][]string{{"root", "1", "0", master}}}
	for _, w := range f.workers {
		resp.Processes = append(resp.Processes, []string{"www-data", w, "1", worker})
	}
	resp.Processes = append(resp.Processes, []string{"www-data", "7", "1", "nginx: worker process is shutting down"})
	return resp, nil
}

func (f *fakeNginx) ContainerKill(ctx context.Context, id, sig string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, sig)
	if !f.broken {
		f.nextPID++
		f.workers = []string{strconv.Itoa(f.nextPID)}
		f.serving = f.pending
	}
	return nil
}

func (f *fakeNginx) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	return container.ExecCreateResponse{ID: "exec1"}, nil
}

func (f *fakeNginx) ExecOutput(ctx context.Context, execID string) (io.ReadCloser, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.slow > 0 {
		t := time.NewTimer(f.slow)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if f.hang {
		pr, pw := io.Pipe() // nobody ever writes: an exec that never ends
		context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
		return pr, nil
	}
	if f.flood > 0 {
		pr, pw := io.Pipe()
		go func() {
			w := stdcopy.NewStdWriter(pw, stdcopy.Stdout)
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for n := int64(0); n < f.flood; n += int64(len(chunk)) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			pw.Close()
		}()
		return pr, nil
	}
	f.mu.Lock()
	if f.torn > 0 {
		f.torn--
		f.mu.Unlock()
		// A frame cut short, then the transport's error: as a dropped
		// attach reads.
		frame := append([]byte{1, 0, 0, 0, 0, 0, 0, 100}, []byte("nginx: the configuration")...)
		return io.NopCloser(io.MultiReader(bytes.NewReader(frame), iotest.ErrReader(io.ErrUnexpectedEOF))), nil
	}
	f.mu.Unlock()
	if f.files != nil {
		f.mu.Lock()
		f.heldOK = !f.files.TryLock() // a reload must hold it: no swap can take it now
		if !f.heldOK {
			f.files.Unlock()
		}
		f.mu.Unlock()
	}
	var buf bytes.Buffer
	msg := "nginx: configuration file /etc/nginx/nginx.conf test is successful"
	f.mu.Lock()
	if f.mismatch > 0 {
		f.mismatch--
		f.testExitOnce = true
		msg = `nginx: [emerg] SSL_CTX_use_PrivateKey("/etc/nginx/certs/a/privkey.pem") failed (SSL: error:05800074:x509 certificate routines::key values mismatch)`
	}
	f.mu.Unlock()
	if f.testExit != 0 {
		msg = `nginx: [emerg] unknown directive "sever" in /etc/nginx/nginx.conf:3`
	}
	stdcopy.NewStdWriter(&buf, stdcopy.Stderr).Write([]byte(msg + "\n"))
	return io.NopCloser(&buf), nil
}

func (f *fakeNginx) ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.testExitOnce {
		f.testExitOnce = false
		return container.ExecInspect{ExitCode: 1}, nil
	}
	return container.ExecInspect{ExitCode: f.testExit}, nil
}

func (f *fakeNginx) killed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.kills...)
}

func selfSignedCert(t *testing.T, name string) (*tls.Certificate, string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, DNSNames: []string{name}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, hex.EncodeToString(sum[:])
}

func newFake(t *testing.T) (*fakeNginx, *tls.Certificate, string) {
	old, _ := selfSignedCert(t, "a.example.com")
	next, fp := selfSignedCert(t, "a.example.com")
	f := &fakeNginx{workers: []string{"10", "11"}, nextPID: 100, serving: old, pending: next}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if c, ok := f.bySNI[h.ServerName]; ok {
			return c, nil
		}
		return f.serving, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go handshakeAll(ln)
	f.ip, f.port, _ = net.SplitHostPort(ln.Addr().String())
	return f, next, fp
}

// handshakeAll completes a handshake with every client of ln until it is
// closed.
func handshakeAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { c.(*tls.Conn).Handshake(); c.Close() }()
	}
}

func reloader(f *fakeNginx) *Reloader {
	o := NginxDefaults()
	o.Timeout = 500 * time.Millisecond
	return New(f, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestEnsureReloadsAndProves(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	p := Proxy{ID: "n1", Name: "nginx", TLSPort: port}
	c := Cert{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}
	rep := reloader(f).Ensure(context.Background(), p, []Cert{c})
	if !rep.OK || !rep.Reloaded || rep.Error != "" {
		t.Fatalf("report = %+v, want a proven reload", rep)
	}
	var steps []string
	for _, s := range rep.Steps {
		steps = append(steps, s.Step)
	}
	if got := strings.Join(steps, ","); got != "inspect,config_test,workers_before,signal,workers_new,handshake" {
		t.Errorf("steps = %s", got)
	}
	if k := f.killed(); len(k) != 1 || k[0] != "HUP" {
		t.Errorf("kills = %v, want one HUP", k)
	}

	// Already serving: no second signal.
	rep = reloader(f).Ensure(context.Background(), p, []Cert{c})
	if !rep.OK || rep.Reloaded || len(f.killed()) != 1 {
		t.Fatalf("second Ensure = %+v (kills %v), want no reload", rep, f.killed())
	}
}

func TestBatcherCoalescesABurstIntoOneReload(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	// A bound no test waits for: the batch must flush because the last
	// certificate says nothing more is in flight. Ten handshakes at once
	// get more than the usual 500 ms on a loaded machine.
	r := reloader(f)
	r.opts.Timeout = 10 * time.Second
	d := NewBatcher(r, time.Hour, nil)
	d.SetProxies([]Proxy{{ID: "n1", Name: "nginx", TLSPort: port}})
	// Nine certificates arrive while orders are in flight, then the last
	// one; the fake serves one leaf for every name, so all ten are proven
	// by the same reload.
	errs := make(chan error, 10)
	deploy := func(i int, more bool) {
		errs <- d.Deploy(context.Background(), Cert{Name: "c" + strconv.Itoa(i), Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, more)
	}
	for i := range 9 {
		go deploy(i, true)
	}
	waitFor(t, 10*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.pending) == 9
	})
	if k := f.killed(); len(k) != 0 {
		t.Fatalf("signals = %v before the last certificate: the batch did not wait for the orders in flight", k)
	}
	go deploy(9, false)
	for range 10 {
		if err := <-errs; err != nil {
			t.Fatalf("Deploy: %v", err)
		}
	}
	if k := f.killed(); len(k) != 1 {
		t.Fatalf("signals = %v, want one reload for the burst", k)
	}
	if r := d.Reports("c3"); len(r) != 1 || !r[0].OK || r[0].Batch != 10 || !slices.Equal(r[0].Certs, []string{"c3"}) ||
		slices.ContainsFunc(r[0].Steps, func(s Step) bool { return s.Step == "handshake" && !strings.HasPrefix(s.Detail, "c3: ") }) {
		t.Fatalf("reports for c3 = %+v, want one proven reload covering 10 certificates, showing c3's handshake only", r)
	}
}

func TestBatcherWaitsAtMostTheBound(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	d := NewBatcher(reloader(f), 50*time.Millisecond, nil)
	d.SetProxies([]Proxy{{ID: "n1", Name: "nginx", TLSPort: port}})
	// An order in flight that never completes (it failed): the certificate
	// is reloaded when the bound is over.
	if err := d.Deploy(context.Background(), Cert{Name: "c", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, true); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if k := f.killed(); len(k) != 1 {
		t.Fatalf("signals = %v, want one", k)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("condition not met within %s", deadline)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBatcherReportsOnlyTheCertificateNotServed(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	d := NewBatcher(reloader(f), 50*time.Millisecond, nil)
	d.SetProxies([]Proxy{{ID: "n1", Name: "nginx", TLSPort: port}})
	good := make(chan error, 1)
	go func() {
		good <- d.Deploy(context.Background(), Cert{Name: "good", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, true)
	}()
	err := d.Deploy(context.Background(), Cert{Name: "bad", Domains: []string{"a.example.com"}, Serial: "x", Fingerprint: "0000"}, true)
	if err == nil || !strings.Contains(err.Error(), "presents serial") {
		t.Fatalf("Deploy(bad) = %v, want a handshake error", err)
	}
	if err := <-good; err != nil {
		t.Fatalf("Deploy(good) = %v, want nil: one certificate's failure is not the other's", err)
	}
}

func TestEnsureFailures(t *testing.T) {
	tests := []struct {
		desc      string
		setup     func(f *fakeNginx)
		wantStep  string
		wantKills int
		wantErr   string
	}{
		{desc: "config test fails: no signal", setup: func(f *fakeNginx) { f.testExit = 1 }, wantStep: "config_test", wantKills: 0, wantErr: "unknown directive"},
		{desc: "workers unchanged after HUP", setup: func(f *fakeNginx) { f.broken = true }, wantStep: "workers_new", wantKills: 1, wantErr: "did not reload"},
		{desc: "reload serves another certificate", setup: func(f *fakeNginx) { other, _ := selfSignedCert(t, "x"); f.pending = other }, wantStep: "handshake", wantKills: 1, wantErr: "presents serial"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f, _, fp := newFake(t)
			tc.setup(f)
			port, _ := strconv.Atoi(f.port)
			rep := reloader(f).Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
				[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}})
			last := rep.Steps[len(rep.Steps)-1]
			if rep.OK || last.Step != tc.wantStep || last.OK || !strings.Contains(rep.Error, tc.wantErr) {
				t.Fatalf("report = %+v, want failure at %s containing %q", rep, tc.wantStep, tc.wantErr)
			}
			if k := f.killed(); len(k) != tc.wantKills {
				t.Errorf("kills = %v, want %d", k, tc.wantKills)
			}
		})
	}
}

// engines dispatches the Docker calls to one fake container per ID.
type engines map[string]*fakeNginx

func (e engines) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return e[id].ContainerInspect(ctx, id)
}
func (e engines) ContainerTop(ctx context.Context, id string, a []string) (container.TopResponse, error) {
	return e[id].ContainerTop(ctx, id, a)
}
func (e engines) ContainerKill(ctx context.Context, id, sig string) error {
	return e[id].ContainerKill(ctx, id, sig)
}
func (e engines) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	return container.ExecCreateResponse{ID: id}, nil
}
func (e engines) ExecOutput(ctx context.Context, execID string) (io.ReadCloser, error) {
	return e[execID].ExecOutput(ctx, execID)
}
func (e engines) ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error) {
	return e[execID].ContainerExecInspect(ctx, execID)
}

func TestBatcherReloadsOnlyTheCertificatesGroup(t *testing.T) {
	a, _, fp := newFake(t)
	b, _, _ := newFake(t)
	pa, _ := strconv.Atoi(a.port)
	pb, _ := strconv.Atoi(b.port)
	o := NginxDefaults()
	o.Timeout = 500 * time.Millisecond
	d := NewBatcher(New(engines{"a": a, "b": b}, o, slog.New(slog.NewTextHandler(io.Discard, nil))), 20*time.Millisecond, nil)
	d.SetProxies([]Proxy{{ID: "a", Name: "nginx-a", TLSPort: pa, Group: "a"}, {ID: "b", Name: "nginx-b", TLSPort: pb, Group: "b"}})
	if err := d.Deploy(context.Background(), Cert{Name: "c", Group: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, false); err != nil {
		t.Fatal(err)
	}
	if len(a.killed()) != 1 || len(b.killed()) != 0 {
		t.Fatalf("signals: group a %v, group b %v; want only group a reloaded", a.killed(), b.killed())
	}
	if r := d.Reports("c"); len(r) != 1 || r[0].Container != "nginx-a" {
		t.Fatalf("reports = %+v, want one for nginx-a", r)
	}
}

func TestEnsureApacheStyleWorkers(t *testing.T) {
	f, _, fp := newFake(t)
	// Apache's children show the same command line as the master (PID 1 here).
	f.masterCmd, f.workerCmd = "apache2 -DFOREGROUND", "apache2 -DFOREGROUND"
	port, _ := strconv.Atoi(f.port)
	p := Proxy{ID: "ap", Name: "apache", TLSPort: port, Signal: "USR1", HasConfigTest: true, ConfigTest: []string{"apache2", "-t"}, WorkerPattern: "apache2"}
	rep := reloader(f).Ensure(context.Background(), p, []Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}})
	if !rep.OK {
		t.Fatalf("report = %+v", rep)
	}
	if k := f.killed(); len(k) != 1 || k[0] != "USR1" {
		t.Fatalf("signals = %v, want one USR1", k)
	}
	for _, st := range rep.Steps {
		if st.Step == "workers_before" && st.Detail != "[10 11]" {
			t.Fatalf("workers before = %s, want [10 11]: the main process (PID 1) is not a worker", st.Detail)
		}
	}
}

func TestEnsureRefusesARestartingProxy(t *testing.T) {
	f, _, fp := newFake(t)
	f.restarting = true
	port, _ := strconv.Atoi(f.port)
	rep := reloader(f).Ensure(context.Background(), Proxy{ID: "n", Name: "nginx", TLSPort: port}, []Cert{{Name: "a", Domains: []string{"a.example.com"}, Fingerprint: fp}})
	if rep.OK || rep.FailedStep != "inspect" || !strings.Contains(rep.Error, "restarting") || len(f.killed()) != 0 {
		t.Fatalf("report = %+v, kills %v; want a failed inspect step and no signal", rep, f.killed())
	}
}

func TestServesFileFollowsRedirectsOnTheProxyOnly(t *testing.T) {
	f, _, _ := newFake(t)
	const token = "tok-123"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/acme-challenge/direct":
			io.WriteString(w, token+"\n")
		case "/.well-known/acme-challenge/moved":
			http.Redirect(w, r, "/served/here", http.StatusMovedPermanently)
		case "/served/here":
			if host, _, _ := net.SplitHostPort(r.Host); host != "a.example.com" {
				http.Error(w, "wrong host "+r.Host, http.StatusBadRequest)
				return
			}
			io.WriteString(w, token)
		case "/.well-known/acme-challenge/away":
			http.Redirect(w, r, "http://cdn.example.net/x", http.StatusFound)
		case "/.well-known/acme-challenge/oddport":
			http.Redirect(w, r, "http://a.example.com:8443/x", http.StatusFound)
		case "/.well-known/acme-challenge/loop":
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	r := reloader(f)
	ctx := context.Background()
	check := func(path string) error {
		return r.ServesFile(ctx, Proxy{ID: "n", Name: "nginx"}, p, "a.example.com", "/.well-known/acme-challenge/"+path, []byte(token))
	}
	if err := check("direct"); err != nil {
		t.Errorf("direct: %v", err)
	}
	if err := check("moved"); err != nil {
		t.Errorf("a redirect on the same host was not followed: %v", err)
	}
	if err := check("missing"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "nginx") {
		t.Errorf("missing token: %v, want a 404 naming the proxy", err)
	}
	for _, path := range []string{"away", "oddport"} {
		if err := check(path); !errors.Is(err, ErrRedirectedAway) {
			t.Errorf("%s: %v, want ErrRedirectedAway", path, err)
		}
	}
	if err := check("loop"); err == nil || errors.Is(err, ErrRedirectedAway) || !strings.Contains(err.Error(), "redirects") {
		t.Errorf("redirect loop: %v, want a plain failure after 10 redirects", err)
	}
}

func TestEnsureSignalsNoUnreachableProxyThatStartedAfterTheFiles(t *testing.T) {
	written := time.Now().Add(-time.Minute)
	tests := []struct {
		desc      string
		started   time.Time
		wantKills int
	}{
		{desc: "started after the files were written: it read them, no signal", started: written.Add(time.Second), wantKills: 0},
		{desc: "started before: signalled (and the handshake skipped)", started: written.Add(-time.Second), wantKills: 1},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f, _, fp := newFake(t)
			f.ip = "" // edgecert shares no network with it
			f.startedAt = tc.started
			rep := reloader(f).Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: 443},
				[]Cert{{Name: "c", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp, Written: written}})
			if !rep.OK || len(f.killed()) != tc.wantKills {
				t.Fatalf("report %+v, signals %v; want OK with %d signals", rep, f.killed(), tc.wantKills)
			}
		})
	}
}

func TestBatcherGathersWhileAProxyReloads(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	f.gate = make(chan struct{})
	var mu sync.Mutex
	var reports []Report
	r := reloader(f)
	r.opts.Timeout = 10 * time.Second
	d := NewBatcher(r, time.Hour, func(rep Report) { mu.Lock(); reports = append(reports, rep); mu.Unlock() })
	d.SetProxies([]Proxy{{ID: "n1", Name: "nginx", TLSPort: port}})
	errs := make(chan error, 3)
	deploy := func(name string) {
		errs <- d.Deploy(context.Background(), Cert{Name: name, Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, false)
	}
	// a's reload waits in its config test...
	go deploy("a")
	waitFor(t, 10*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		q := d.queues["n1"]
		return q != nil && q.running && len(q.certs) == 0
	})
	// ...while b and c are flushed, each on its own (nothing more in flight).
	go deploy("b")
	go deploy("c")
	waitFor(t, 10*time.Second, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.queues["n1"].certs) == 2 })
	close(f.gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("Deploy: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 2 || len(reports[1].Certs) != 2 {
		t.Fatalf("reports = %+v; want two: a, then b and c together", reports)
	}
	if r := d.Reports("b"); len(r) != 1 || r[0].Batch != 2 {
		t.Errorf("b's report = %+v, want one covering 2 certificates", r)
	}
}

func TestEnsureAProxyStartedAfterTheFilesIsReloadedOnlyIfItDoesNotServeThem(t *testing.T) {
	written := time.Now().Add(-time.Minute)
	tests := []struct {
		desc      string
		serving   bool // the fake serves the new leaf already (it read it at start)
		wantKills int
	}{
		{desc: "serves what it read at start: no signal", serving: true, wantKills: 0},
		{desc: "does not (its configuration changed since): reloaded", serving: false, wantKills: 1},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f, next, fp := newFake(t)
			port, _ := strconv.Atoi(f.port)
			f.startedAt = written.Add(time.Second)
			if tc.serving {
				f.serving = next
			}
			r := reloader(f)
			r.opts.Timeout = 10 * time.Second
			rep := r.Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
				[]Cert{{Name: "c", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp, Written: written}})
			if !rep.OK || len(f.killed()) != tc.wantKills {
				t.Fatalf("report %+v, signals %v; want OK with %d signals", rep, f.killed(), tc.wantKills)
			}
		})
	}
}

func TestReportSummaryIsOneWordPerStep(t *testing.T) {
	rep := Report{Steps: []Step{{Step: "inspect", TookMS: 1}, {Step: "handshake", TookMS: 3}, {Step: "handshake", TookMS: 5}, {Step: "handshake", TookMS: 4}}}
	if got, want := rep.summary(), "inspect=1ms handshakes=5ms(3)"; got != want {
		t.Errorf("summary = %q, want %q: a thousand handshakes make one word", got, want)
	}
	rep.Steps = rep.Steps[:2]
	if got, want := rep.summary(), "inspect=1ms handshake=3ms"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
}

// reloadLog is what a Batcher reported, and when each report came.
type reloadLog struct {
	mu      sync.Mutex
	reports []Report
	ends    []time.Time
}

// restingBatcher batches for f's one proxy (listening on port), with no
// bound to wait for, and rests after a reload of restFrom or more.
func restingBatcher(f *fakeNginx, port int, restFrom time.Duration) (*Batcher, *reloadLog) {
	rl := &reloadLog{}
	r := reloader(f)
	r.opts.Timeout = 10 * time.Second
	d := NewBatcher(r, time.Hour, func(rep Report) {
		rl.mu.Lock()
		rl.reports, rl.ends = append(rl.reports, rep), append(rl.ends, time.Now())
		rl.mu.Unlock()
	})
	d.restFrom = restFrom
	d.SetProxies([]Proxy{{ID: "n1", Name: "nginx", TLSPort: port}})
	return d, rl
}

func TestBatcherRestsAProxyAfterASlowReload(t *testing.T) {
	f, _, fp := newFake(t)
	port, _ := strconv.Atoi(f.port)
	f.gate = make(chan struct{})
	d, rl := restingBatcher(f, port, 300*time.Millisecond)
	deploy := func(name string) error {
		return d.Deploy(context.Background(), Cert{Name: name, Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, false)
	}
	// a's reload is slow: its config test takes a second.
	time.AfterFunc(time.Second, func() { close(f.gate) })
	if err := deploy("a"); err != nil {
		t.Fatal(err)
	}
	// b comes after it, and c while the proxy rests: one reload for both,
	// no sooner than a's took after a's end.
	errs := make(chan error, 2)
	go func() { errs <- deploy("b") }()
	waitFor(t, 10*time.Second, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.queues["n1"].certs) == 1 })
	go func() { errs <- deploy("c") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Deploy: %v", err)
		}
	}
	rl.mu.Lock()
	if len(rl.reports) != 2 || !slices.Equal(rl.reports[1].Certs, []string{"b", "c"}) && !slices.Equal(rl.reports[1].Certs, []string{"c", "b"}) {
		t.Fatalf("reports = %+v; want two: a, then b and c together", rl.reports)
	}
	// a's reload took about a second (its config test waited for the
	// gate); without a rest b's would begin within milliseconds.
	slow := rl.ends[0].Sub(rl.reports[0].At)
	if rested := rl.reports[1].At.Sub(rl.ends[0]); rested < slow/2 {
		t.Errorf("the next reload began %s after a reload that took %s; want a rest as long", rested, slow)
	}
	rl.mu.Unlock()

	// A fast reload is followed by none.
	d.mu.Lock()
	d.restFrom = time.Hour
	d.mu.Unlock()
	if err := deploy("d"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := deploy("e"); err != nil {
		t.Fatal(err)
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if len(rl.reports) != 4 || rl.reports[3].At.Sub(began) > time.Second {
		t.Errorf("after a fast reload the next began %s later (reports %+v)", rl.reports[len(rl.reports)-1].At.Sub(began), rl.reports)
	}
}

func TestRestAfter(t *testing.T) {
	const from, limit = 5 * time.Second, 2 * time.Minute
	tests := []struct {
		desc                 string
		reloaded             bool
		took, spell          time.Duration
		wantRest, wantLasted time.Duration
	}{
		{desc: "a fast reload: no rest, the spell ends", reloaded: true, took: time.Second, spell: 40 * time.Second, wantRest: 0, wantLasted: 0},
		{desc: "the first slow one of a spell: as long as it took", reloaded: true, took: 20 * time.Second,
			wantRest: 20 * time.Second, wantLasted: 40 * time.Second},
		{desc: "the second, back to back: as long as all before it (reload, rest, reload)", reloaded: true, took: 18 * time.Second, spell: 40 * time.Second,
			wantRest: 58 * time.Second, wantLasted: 116 * time.Second},
		{desc: "a long spell: never past the reload timeout", reloaded: true, took: 20 * time.Second, spell: 116 * time.Second,
			wantRest: limit, wantLasted: 256 * time.Second},
		{desc: "no signal sent (all served, or the config test failed): no rest, the spell stands", reloaded: false, took: 9 * time.Second,
			spell: 40 * time.Second, wantRest: 0, wantLasted: 40 * time.Second},
		{desc: "exactly the threshold counts as slow", reloaded: true, took: from, wantRest: from, wantLasted: 2 * from},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rest, lasted := restAfter(tc.reloaded, tc.took, tc.spell, from, limit)
			if rest != tc.wantRest || lasted != tc.wantLasted {
				t.Errorf("restAfter(%v, %s, %s) = %s, %s; want %s, %s", tc.reloaded, tc.took, tc.spell, rest, lasted, tc.wantRest, tc.wantLasted)
			}
		})
	}
}

// A burst that keeps a slow proxy reloading back to back makes it rest
// longer each time (as long as the spell so far); once it had nothing
// waiting when a rest ended, the next slow reload rests as long as itself.
// Each next certificate is handed over while the reload before it is held
// at its config test, so it waits for that reload's rest whatever the
// machine's speed.
func TestBatcherRestsLongerAsABurstGoesOn(t *testing.T) {
	f, _, _ := newFake(t)
	port, _ := strconv.Atoi(f.port)
	f.slow = 300 * time.Millisecond
	d, rl := restingBatcher(f, port, 200*time.Millisecond)
	set := func(gate chan struct{}, serveNext *tls.Certificate) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.gate = gate
		if serveNext != nil {
			f.pending = serveNext // what the next HUP makes it serve
		}
	}
	// Each deployment is a new certificate, which only a reload serves.
	type cert struct {
		tls  *tls.Certificate
		errc chan error
	}
	deploy := func(name string) cert {
		next, fp := selfSignedCert(t, "a.example.com")
		c := cert{next, make(chan error, 1)}
		go func() {
			c.errc <- d.Deploy(context.Background(), Cert{Name: name, Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, false)
		}()
		return c
	}
	queued := func(n int) func() bool {
		return func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			q := d.queues["n1"]
			return q != nil && q.running && len(q.certs) == n
		}
	}
	reloads := func() int { rl.mu.Lock(); defer rl.mu.Unlock(); return len(rl.reports) }
	resting := func() bool { d.mu.Lock(); defer d.mu.Unlock(); return time.Now().Before(d.queues["n1"].restUntil) }
	wait := func(c cert) {
		t.Helper()
		select {
		case err := <-c.errc:
			if err != nil {
				t.Fatalf("Deploy: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a deployment was not proven within 20 s")
		}
	}

	// Three reloads back to back: b comes while a's reload runs, c while
	// b's does; each waits for the rest after the one before.
	gate := make(chan struct{})
	set(gate, nil)
	a := deploy("a")
	set(gate, a.tls)
	waitFor(t, 10*time.Second, queued(0)) // a's reload holds at its config test
	prev := a
	for _, name := range []string{"b", "c"} {
		next := deploy(name)
		waitFor(t, 10*time.Second, queued(1))
		held := gate
		gate = make(chan struct{})
		set(gate, nil)
		close(held) // the reload before it ends, then the proxy rests
		wait(prev)
		set(gate, next.tls)
		waitFor(t, 10*time.Second, queued(0)) // next's reload, after the rest, holds at its config test
		prev = next
	}
	set(nil, nil)
	close(gate)
	wait(prev)

	rl.mu.Lock()
	if len(rl.reports) != 3 {
		t.Fatalf("reports = %+v; want three reloads", rl.reports)
	}
	took := func(i int) time.Duration { return rl.reports[i].loadTook() }
	// The second rest is as long as the first reload, its rest and the second.
	if gap := rl.reports[2].At.Sub(rl.ends[1]); gap < 2*took(0)+took(1) {
		t.Errorf("the third reload began %s after the second; want a rest as long as the spell before it (2 x %s + %s)", gap, took(0), took(1))
	}
	spell := 4*took(0) + 2*took(1) + took(2)
	rl.mu.Unlock()

	// Nothing waits when its rest ends: the spell is over, and the next
	// slow reload rests as long as itself only.
	waitFor(t, 30*time.Second, func() bool { return !resting() })
	gate = make(chan struct{})
	set(gate, nil)
	e := deploy("d")
	set(gate, e.tls)
	close(gate) // its HUP comes after this: it serves d
	wait(e)
	waitFor(t, 10*time.Second, func() bool { return reloads() == 4 })
	d.mu.Lock()
	rest := time.Until(d.queues["n1"].restUntil)
	d.mu.Unlock()
	if rest >= spell {
		t.Errorf("after a spell of %s and a rest with nothing waiting, the next reload rests %s; want as long as itself only", spell, rest)
	}
}

func TestReportForCertKeepsItsOwnHandshakesOnly(t *testing.T) {
	rep := Report{Container: "nginx", Certs: []string{"a", "b"}, OK: false, Error: "not served", CertErrors: map[string]string{"b": "b: wrong leaf"},
		Steps: []Step{{Step: "config_test", Detail: "ok"}, {Step: "handshake", Detail: "a: served"}, {Step: "handshake", Detail: "b: wrong leaf"},
			{Step: "handshake", Detail: "c: not in this reload"}}}
	a, b := rep.ForCert("a"), rep.ForCert("b")
	steps := func(r Report) (out []string) {
		for _, s := range r.Steps {
			out = append(out, s.Detail)
		}
		return out
	}
	if got := steps(a); !slices.Equal(got, []string{"ok", "a: served", "c: not in this reload"}) || !a.OK || a.Batch != 2 || a.CertErrors != nil {
		t.Errorf("a's view: steps %q ok %v batch %d errors %v", got, a.OK, a.Batch, a.CertErrors)
	}
	if got := steps(b); !slices.Equal(got, []string{"ok", "b: wrong leaf", "c: not in this reload"}) || b.OK || b.Error != "b: wrong leaf" {
		t.Errorf("b's view: steps %q ok %v error %q", got, b.OK, b.Error)
	}
}

func TestReportForProxyIsOneLineOfHandshakes(t *testing.T) {
	rep := Report{Container: "nginx", Certs: []string{"a", "b", "c"}, CertErrors: map[string]string{"b": "b: wrong leaf"},
		Steps: []Step{{Step: "config_test", OK: true, TookMS: 120}, {Step: "handshake", OK: true, TookMS: 4, Detail: "a: served"},
			{Step: "handshake", TookMS: 900, Detail: "b: wrong leaf"}, {Step: "handshake", OK: true, TookMS: 7, Detail: "c: served"}}}
	v := rep.ForProxy()
	if len(v.Steps) != 2 || v.Steps[0].Step != "config_test" || v.Batch != 3 {
		t.Fatalf("proxy view: %+v; want the config test and one handshakes step, batch 3", v)
	}
	if h := v.Steps[1]; h.Step != "handshakes" || h.OK || h.TookMS != 900 || h.Detail != "3 certificates, 1 not served" {
		t.Errorf("handshakes step %+v; want the slowest's 900 ms, 3 certificates, 1 not served", h)
	}
	if v.CertErrors["b"] == "" || len(rep.Steps) != 4 {
		t.Errorf("the certificates' errors are kept (%v) and the report is not changed (%d steps)", v.CertErrors, len(rep.Steps))
	}
}

// BenchmarkReportForCertThousand views a reload of 1,000 certificates (one
// handshake each) for every one of them, as the Batcher does.
func BenchmarkReportForCertThousand(b *testing.B) {
	rep := Report{Container: "nginx", OK: true}
	for i := range 1000 {
		n := "c" + strconv.Itoa(i)
		rep.Certs = append(rep.Certs, n)
		rep.Steps = append(rep.Steps, Step{Step: "handshake", Detail: n + ": served"})
	}
	for b.Loop() {
		for _, n := range rep.Certs {
			if v := rep.ForCert(n); len(v.Steps) != 1 {
				b.Fatalf("%s: %d steps", n, len(v.Steps))
			}
		}
	}
}

// A config test whose output stream breaks (an engine or socket proxy that
// drops the attach) is run again once, not taken for nginx's refusal.
func TestEnsureRunsAConfigTestAgainWhenItsStreamBreaks(t *testing.T) {
	f, _, fp := newFake(t)
	f.torn = 1
	port, _ := strconv.Atoi(f.port)
	rep := reloader(f).Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}})
	if !rep.OK || len(f.kills) != 1 {
		t.Fatalf("a broken output stream failed the reload: %+v (signals %v)", rep, f.kills)
	}
	g, _, gfp := newFake(t)
	g.torn = 2
	gport, _ := strconv.Atoi(g.port)
	rep = reloader(g).Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: gport},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: gfp}})
	if rep.OK || rep.FailedStep != "config_test" || len(g.kills) != 0 {
		t.Errorf("broken twice: %+v, signals %v; want the config test failed, no signal", rep, g.kills)
	}
}
