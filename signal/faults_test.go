package signal

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

func TestEnsureAHungConfigTestTimesOutAndFreesTheProxy(t *testing.T) {
	f, _, fp := newFake(t)
	f.hang = true
	port, _ := strconv.Atoi(f.port)
	r := reloader(f) // Timeout 500ms
	p := Proxy{ID: "n1", Name: "nginx", TLSPort: port}
	c := Cert{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}
	start := time.Now()
	rep := r.Ensure(context.Background(), p, []Cert{c})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Ensure took %s with a 500ms timeout", took)
	}
	if rep.OK || rep.FailedStep != "config_test" || !strings.Contains(rep.Error, "timed out after 500ms") || len(f.killed()) != 0 {
		t.Fatalf("report = %+v, want config_test timed out and no signal", rep)
	}
	// The proxy is not left locked: the next reload runs (and now succeeds).
	f.mu.Lock()
	f.hang = false
	f.mu.Unlock()
	if rep := r.Ensure(context.Background(), p, []Cert{c}); !rep.OK {
		t.Fatalf("the reload after a hung one: %+v", rep)
	}
}

func TestEnsureCapsCommandOutput(t *testing.T) {
	f, _, fp := newFake(t)
	f.flood, f.testExit = 64<<20, 1
	port, _ := strconv.Atoi(f.port)
	r := reloader(f)
	r.opts.Timeout = 20 * time.Second
	rep := r.Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Fingerprint: fp}})
	if rep.OK || rep.FailedStep != "config_test" {
		t.Fatalf("report = %+v, want a failed config test", rep.FailedStep)
	}
	if n := len(rep.Error); n > 3*outputKeep {
		t.Errorf("the error carries %d bytes of output, want at most about %d", n, 2*outputKeep)
	}
	if !strings.Contains(rep.Error, "bytes of output cut") {
		t.Errorf("the error does not say output was cut")
	}
	for _, st := range rep.Steps {
		if len(st.Detail) > 3*outputKeep {
			t.Errorf("step %s keeps %d bytes", st.Step, len(st.Detail))
		}
	}
}

func TestCappedKeepsBothEnds(t *testing.T) {
	var c capped
	c.Write([]byte("nginx: [emerg] first line\n"))
	for range 100 {
		c.Write([]byte(strings.Repeat("y", 1000)))
	}
	c.Write([]byte("\nnginx: configuration file test failed"))
	out := c.String()
	if !strings.HasPrefix(out, "nginx: [emerg] first line") || !strings.HasSuffix(out, "test failed") || len(out) > 2*outputKeep+100 {
		t.Errorf("capped output (%d bytes) lost an end or kept too much", len(out))
	}
	var small capped
	small.Write([]byte("ok\n"))
	if small.String() != "ok" {
		t.Errorf("small output = %q", small.String())
	}
}

// hangingEngine is a Docker Engine on a unix socket that creates execs and
// answers their start, then never sends a byte of output: an exec that
// never ends, without a container.
func hangingEngine(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.41/containers/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"Id":"exec1"}`)
	})
	var mu sync.Mutex
	var held []net.Conn
	mux.HandleFunc("POST /v1.41/exec/{id}/start", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "test engine: edgecert asked for an upgrade", http.StatusBadRequest)
			return
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n") // as dockerd does
		buf.Flush()
		mu.Lock()
		held = append(held, conn) // and never write
		mu.Unlock()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return sock
}

func TestExecWithTheRealClientEndsAtItsDeadline(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+hangingEngine(t)), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r := New(Docker(cli), NginxDefaults(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r.exec(ctx, "nginx", []string{"nginx", "-t"})
	if took := time.Since(start); err == nil || took > 2*time.Second {
		t.Fatalf("exec on a hung stream returned %v after %s; want an error soon after the 500ms deadline", err, took)
	}
}

func TestBatcherAStuckProxyFailsAlone(t *testing.T) {
	good, _, fp := newFake(t)
	stuck, _, _ := newFake(t)
	stuck.hang = true
	pg, _ := strconv.Atoi(good.port)
	ps, _ := strconv.Atoi(stuck.port)
	o := NginxDefaults()
	o.Timeout = 500 * time.Millisecond
	d := NewBatcher(New(engines{"good": good, "stuck": stuck}, o, slog.New(slog.NewTextHandler(io.Discard, nil))), 20*time.Millisecond, nil)
	d.SetProxies([]Proxy{{ID: "good", Name: "nginx", TLSPort: pg}, {ID: "stuck", Name: "stuck", TLSPort: ps}})
	for round := range 2 {
		start := time.Now()
		err := d.Deploy(context.Background(), Cert{Name: "c", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}, false)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("round %d: Deploy took %s with a 500ms reload timeout", round, took)
		}
		if err == nil || !strings.Contains(err.Error(), "stuck") || !strings.Contains(err.Error(), "timed out after 500ms") {
			t.Fatalf("round %d: Deploy = %v, want the stuck proxy's timeout", round, err)
		}
		byName := map[string]Report{}
		for _, r := range d.Reports("c") {
			byName[r.Container] = r
		}
		if !byName["nginx"].OK || byName["stuck"].OK || byName["stuck"].FailedStep != "config_test" {
			t.Fatalf("round %d: reports = %+v; want nginx proven, stuck failed at config_test", round, byName)
		}
	}
	if len(good.killed()) != 1 || len(stuck.killed()) != 0 {
		t.Errorf("signals: good %v, stuck %v; want good reloaded once (then already serving), stuck never", good.killed(), stuck.killed())
	}
}

func TestDockerExecReadsOutputWithoutAnUpgrade(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.41/containers/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"Id":"e1"}`)
	})
	mux.HandleFunc("POST /v1.41/exec/e1/start", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		// The request is read whole first, as the engine does: closing a
		// connection with unread bytes resets it, and the client would see
		// a reset instead of the output.
		io.Copy(io.Discard, r.Body)
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
		sw := stdcopy.NewStdWriter(buf, stdcopy.Stderr)
		sw.Write([]byte("nginx: [emerg] unknown directive \"sever\"\n"))
		buf.Flush()
	})
	mux.HandleFunc("GET /v1.41/exec/e1/json", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ExitCode":1,"Running":false}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r := New(Docker(cli), NginxDefaults(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	out, err := r.exec(context.Background(), "nginx", []string{"nginx", "-t"})
	if err == nil || !strings.Contains(err.Error(), "exit code 1") || !strings.Contains(out, `unknown directive "sever"`) {
		t.Fatalf("exec = %q, %v; want nginx's message and exit code 1", out, err)
	}
}

func TestEnsureHoldsTheFilesAndRetriesAKeyMismatchOnce(t *testing.T) {
	f, _, fp := newFake(t)
	f.files, f.mismatch = &sync.RWMutex{}, 1
	port, _ := strconv.Atoi(f.port)
	r := reloader(f)
	r.opts.Files = f.files
	rep := r.Ensure(context.Background(), Proxy{ID: "n1", Name: "nginx", TLSPort: port},
		[]Cert{{Name: "a", Domains: []string{"a.example.com"}, Serial: "s", Fingerprint: fp}})
	if !rep.OK {
		t.Fatalf("a key mismatch read across a swap failed the reload: %+v", rep)
	}
	f.mu.Lock()
	held := f.heldOK
	f.mu.Unlock()
	if !held {
		t.Errorf("the certificate files were not held during the config test: a swap could have run")
	}
	if !f.files.TryLock() {
		t.Fatalf("the files are still held after the reload")
	}
	f.files.Unlock()
}
