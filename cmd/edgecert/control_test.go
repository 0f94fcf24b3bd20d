package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/legoissuer"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// fakeDaemon is the control server's view of a daemon, set by each test.
type fakeDaemon struct {
	mu         sync.Mutex
	doc        StatusDoc
	unwell     error
	renewed    []string
	rolledBack []string
}

func (f *fakeDaemon) status() StatusDoc { f.mu.Lock(); defer f.mu.Unlock(); return f.doc }
func (f *fakeDaemon) healthy() error    { f.mu.Lock(); defer f.mu.Unlock(); return f.unwell }
func (f *fakeDaemon) forget(ctx context.Context, name string) acme.RenewResult {
	if name != "site" {
		return acme.RenewResult{Name: name, Err: "no certificate named " + name}
	}
	return acme.RenewResult{Name: name, Message: "released"}
}

func (f *fakeDaemon) dnsRecords(ctx context.Context, key string) (dnsRecordAnswer, error) {
	if key != "persist" {
		return dnsRecordAnswer{}, errors.New("no certificate named or covering " + strconv.Quote(key))
	}
	return dnsRecordAnswer{Name: "persist", Domains: []string{"p.example.com", "*.p.example.com"}, Records: []legoissuer.PersistRecord{
		{Owner: "_validation-persist.p.example.com", Value: "ca.example; accounturi=https://ca.example/acct/1; policy=wildcard",
			Names: []string{"p.example.com", "*.p.example.com"}, Problem: "no TXT record for ca.example at _validation-persist.p.example.com"}}}, nil
}

func (f *fakeDaemon) rollback(ctx context.Context, name, serial string) acme.RenewResult {
	f.mu.Lock()
	f.rolledBack = append(f.rolledBack, name+"@"+serial)
	f.mu.Unlock()
	if serial == "dead" {
		return acme.RenewResult{Name: name, Err: "refused: serial dead expired at 2026-01-01T00:00:00Z"}
	}
	return acme.RenewResult{Name: name, Serial: "0abb", Message: "rolled back to serial 0abb and proven served"}
}

func (f *fakeDaemon) renew(ctx context.Context, name string, force, dryRun bool) acme.RenewResult {
	f.mu.Lock()
	f.renewed = append(f.renewed, name)
	f.mu.Unlock()
	if name == "broken" {
		return acme.RenewResult{Name: name, Ordered: true, Message: "order failed", Err: "urn:ietf:params:acme:error:connection"}
	}
	return acme.RenewResult{Name: name, Ordered: force, DryRun: dryRun, Serial: "0abc", NotAfter: time.Now().Add(90 * 24 * time.Hour),
		Message: "certificate issued, written and proven served"}
}

// serve runs the control socket for d until the test ends and points the CLI at it.
func serve(t *testing.T, d daemonState) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	t.Setenv("EDGECERT_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveControl(ctx, sock, d, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveControl: %v", err)
		}
	})
	// Ready is a socket that answers: the file exists from bind(2), before
	// listen(2), and a dial in between is refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("control socket never answered: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func cli(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := realMain(args, &out, &errb)
	return out.String(), errb.String(), code
}

func sampleDoc() StatusDoc {
	now := time.Now()
	site := CertView{CertStatus: acme.CertStatus{Name: "site", Domains: []string{"example.com", "www.example.com"}, State: acme.StateValid,
		Serial: "0abc", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(89 * 24 * time.Hour), RenewAt: now.Add(59 * 24 * time.Hour),
		RenewSource: acme.SourceARI, Deployed: true, Containers: []string{"app"},
		History: []acme.Event{{At: now, Kind: acme.EventIssued, Serial: "0abc"}}},
		Reloads: []signal.Report{{Container: "nginx", OK: true, Reloaded: true, At: now, Steps: []signal.Step{{Step: "config_test", OK: true, TookMS: 120}}}}}
	old := CertView{CertStatus: acme.CertStatus{Name: "old", Domains: []string{"old.example.com"}, State: acme.StateUnused, NotAfter: now.Add(time.Hour)}}
	return StatusDoc{Version: "test", Docker: dockerwatch.Health{Connected: true}, Certificates: []CertView{old, site},
		Problems: []dockerwatch.Problem{{Container: "bad", Label: "edgecert.domains", Err: "no domain names"}}}
}

func TestCLIStatusThroughTheSocket(t *testing.T) {
	d := &fakeDaemon{doc: sampleDoc()}
	serve(t, d)

	out, errs, code := cli("status")
	if code != 0 || !strings.Contains(out, "site") || !strings.Contains(out, "1/1 proven") || !strings.Contains(out, "PROBLEMS") ||
		!strings.Contains(out, "container bad: label edgecert.domains") {
		t.Errorf("status: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = cli("status", "www.example.com")
	if code != 0 || !strings.Contains(out, "proxy nginx") || !strings.Contains(out, "history") {
		t.Errorf("status DOMAIN: exit %d\n%s", code, out)
	}
	out, _, code = cli("status", "--json")
	var doc StatusDoc
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || len(doc.Certificates) != 2 {
		t.Errorf("status --json: exit %d, %v\n%s", code, err, out)
	}
	if _, _, code = cli("status", "nosuch"); code != 2 {
		t.Errorf("status of an unknown name: exit %d, want 2", code)
	}

	d.mu.Lock()
	d.doc.Certificates[1].State, d.doc.Certificates[1].LastError = acme.StateFailing, "urn:ietf:params:acme:error:unauthorized"
	d.mu.Unlock()
	out, errs, code = cli("status")
	if code != 1 || !strings.Contains(errs, "site is failing") || !strings.Contains(out, "unauthorized") {
		t.Errorf("status with a failing certificate: exit %d\n%s%s", code, out, errs)
	}
}

func TestCLIRenewAndHealthThroughTheSocket(t *testing.T) {
	d := &fakeDaemon{doc: sampleDoc()}
	serve(t, d)

	out, errs, code := cli("renew", "--force", "example.com")
	if code != 0 || !strings.Contains(out, "renewing site") || !strings.Contains(out, "site: certificate issued, written and proven served (serial 0abc") {
		t.Errorf("renew --force: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = cli("renew", "--all")
	if code != 0 || strings.Contains(out, "old") {
		t.Errorf("renew --all renewed an unused certificate or failed: exit %d\n%s", code, out)
	}
	if out, _, code = cli("renew"); code != 0 || !strings.Contains(out, "nothing is due; the next renewal is site") {
		t.Errorf("renew with nothing due: exit %d %q", code, out)
	}
	d.mu.Lock()
	d.doc.Certificates[0].Name, d.doc.Certificates[0].State = "broken", acme.StateValid
	d.mu.Unlock()
	out, _, code = cli("renew", "broken")
	if code != 1 || !strings.Contains(out, "broken: FAILED: order failed: urn:ietf:params:acme:error:connection") {
		t.Errorf("renew of a failing order: exit %d\n%s", code, out)
	}
	if out, _, code := cli("forget", "site"); code != 0 || !strings.Contains(out, "site: released") {
		t.Errorf("forget site: exit %d %q", code, out)
	}
	if _, errs, code := cli("forget", "nosuch"); code != 1 || !strings.Contains(errs, "no certificate named nosuch") {
		t.Errorf("forget of an unknown name: exit %d %q", code, errs)
	}

	if out, _, code = cli("health"); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Errorf("health: exit %d %q", code, out)
	}
	d.mu.Lock()
	d.unwell = errors.New("not connected to the Docker Engine")
	d.mu.Unlock()
	if _, errs, code = cli("health"); code != 1 || !strings.Contains(errs, "not connected") {
		t.Errorf("unhealthy: exit %d %q", code, errs)
	}
}

func TestCLIWithoutADaemon(t *testing.T) {
	t.Setenv("EDGECERT_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	for _, args := range [][]string{{"status"}, {"renew", "x"}} {
		if _, errs, code := cli(args...); code != 2 || !strings.Contains(errs, "cannot reach the edgecert daemon") {
			t.Errorf("%v without a daemon: exit %d %q", args, code, errs)
		}
	}
	if _, _, code := cli("health"); code != 1 {
		t.Errorf("health without a daemon: exit %d, want 1", code)
	}
	if out, _, code := cli("version"); code != 0 || strings.Split(out, "\n")[0] != version || !strings.Contains(out, "dns providers: exec, httpreq, rfc2136 (minimal build)") {
		t.Errorf("version: %d %q", code, out)
	}
	if _, errs, code := cli("frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errs)
	}
}

func TestControlRejectsABadRenewRequest(t *testing.T) {
	serve(t, &fakeDaemon{doc: sampleDoc()})
	var out map[string]string
	code, err := newControlClient(os.Getenv("EDGECERT_SOCKET")).do(context.Background(), "POST", "/v1/renew", map[string]any{"names": []string{}}, &out)
	if err != nil || code != 400 || out["error"] == "" {
		t.Errorf("empty renew request: %d %v %v", code, out, err)
	}
}

func TestSecondDaemonLeavesTheFirstOneReachable(t *testing.T) {
	dir := t.TempDir()
	first, err := lockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := lockState(dir); !errors.Is(err, errLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock = %v, want errLocked naming the running pid", err)
	}

	d := &fakeDaemon{doc: sampleDoc()}
	serve(t, d)
	sock := os.Getenv("EDGECERT_SOCKET")
	// Bounded: were the second server to take the socket, it would serve
	// until this deadline instead of hanging the suite.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := serveControl(ctx, sock, d, nil); !errors.Is(err, errSocketHeld) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("a second control server on a live socket: %v, want errSocketHeld naming the holder", err)
	}
	if _, _, code := cli("status"); code != 0 {
		t.Fatalf("status after a second daemon tried: exit %d, want the first still reachable", code)
	}
	// And a bare `edgecert` prints help instead of starting a daemon.
	if out, _, code := cli(); code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "rollback") {
		t.Errorf("edgecert with no command: exit %d %q", code, out)
	}
	first.Close()
	again, err := lockState(dir)
	if err != nil {
		t.Fatalf("the lock after the first daemon ended: %v", err)
	}
	again.Close()
}

func TestStatusExitsTwoWhenDockerIsNotFollowed(t *testing.T) {
	doc := sampleDoc()
	doc.Docker = dockerwatch.Health{Error: "not connected to the Docker Engine: event stream: EOF"}
	serve(t, &fakeDaemon{doc: doc})
	out, errs, code := cli("status")
	if code != 2 || !strings.Contains(errs, "not seen") || !strings.Contains(out, "Docker: not connected") {
		t.Errorf("status while not connected: exit %d\n%s%s", code, out, errs)
	}
}

// A socket file left by a daemon that died (no one holds its lock) is
// replaced; the new daemon answers on it.
func TestControlSocketLeftByADeadDaemonIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the stale socket file: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveControl(ctx, sock, &fakeDaemon{doc: sampleDoc()}, nil) }()
	t.Setenv("EDGECERT_SOCKET", sock)
	for {
		out, _, code := cli("status")
		if code == 0 && strings.Contains(out, "site") {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serveControl over a stale socket: %v", err)
		case <-ctx.Done():
			t.Fatal("no answer on the replaced socket")
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveControl: %v", err)
	}
}
