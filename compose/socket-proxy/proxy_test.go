// Package socketproxy tests the socket proxy users get (haproxy.cfg and
// edgecert.lua, as shipped) with Debian's HAProxy in front of a fake engine
// that records what reaches it: every call edgecert makes passes, and every
// way around the rules that we know of is refused before the engine. The
// e2e suite runs the same files in front of the real engine, with edgecert.
package socketproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The engine's containers: a proxy edgecert reloads, one with its own
// config test, reload command and signal, an nginx-proxy container, an app
// and the socket proxy itself (which holds docker.sock).
var containers = map[string]struct {
	id     string
	labels map[string]string
}{
	"nginx":        {strings.Repeat("a1", 32), map[string]string{"edgecert.nginx": "true"}},
	"apache":       {strings.Repeat("b2", 32), map[string]string{"edgecert.nginx": "web", "edgecert.config_test": "apachectl  configtest", "edgecert.reload_command": "apachectl graceful", "edgecert.signal": "sigusr1"}},
	"nginxproxy":   {strings.Repeat("c3", 32), map[string]string{"com.github.nginx-proxy.nginx": ""}},
	"app":          {strings.Repeat("d4", 32), map[string]string{"edgecert.domains": "a.example.com"}},
	"socket-proxy": {strings.Repeat("e5", 32), nil},
	"off":          {strings.Repeat("f6", 32), map[string]string{"edgecert.nginx": "false", "com.github.nginx-proxy.nginx": ""}},
}

// engine is a fake Docker Engine on a unix socket: it answers inspects of
// the containers above (the proxy's own lookups) and records every other
// request.
type engine struct {
	mu   sync.Mutex
	got  []string // "METHOD path?query body"
	path string
}

func (e *engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := new(bytes.Buffer)
	body.ReadFrom(r.Body)
	if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/containers/") && strings.HasSuffix(r.URL.Path, "/json") {
		ref := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/containers/"), "/json")
		for name, c := range containers {
			if ref == name || ref == c.id {
				json.NewEncoder(w).Encode(map[string]any{"Id": c.id, "Name": "/" + name, "Config": map[string]any{"Labels": c.labels}})
				return
			}
		}
		http.Error(w, `{"message":"No such container"}`, http.StatusNotFound)
		return
	}
	e.mu.Lock()
	e.got = append(e.got, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+body.String()))
	e.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/exec"):
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"Id":"0123abcd"}`)
	case strings.HasSuffix(r.URL.Path, "/kill"):
		w.WriteHeader(http.StatusNoContent)
	default:
		fmt.Fprint(w, "OK")
	}
}

func (e *engine) reached() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.got
	e.got = nil
	return out
}

// startProxy runs HAProxy with the shipped files (the bind line alone
// changed, to a socket of the test's) in front of e, and returns a client of
// it that sends requests as written.
func startProxy(t *testing.T, e *engine) func(raw string) (int, string) {
	t.Helper()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is not installed (make setup installs it)")
		}
		t.Skip("haproxy is not installed (make setup installs it)")
	}
	dir := t.TempDir()
	cfg, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	front := filepath.Join(dir, "proxy.sock")
	if !bytes.Contains(cfg, []byte("bind :2375\n")) {
		t.Fatal("haproxy.cfg has no 'bind :2375' line to point at the test's socket")
	}
	cfg = bytes.Replace(cfg, []byte("bind :2375\n"), []byte("bind unix@"+front+"\n"), 1)
	lua, err := os.ReadFile("edgecert.lua")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"haproxy.cfg": cfg, "edgecert.lua": lua} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	e.path = filepath.Join(dir, "engine.sock")
	l, err := net.Listen("unix", e.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, haproxy, "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	cmd.Env = append(os.Environ(), "DOCKER_SOCKET="+e.path)
	logs := new(lockedBuffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy's log:\n%s", logs.String())
		}
	})

	send := func(raw string) (int, string) {
		t.Helper()
		c, err := net.DialTimeout("unix", front, 2*time.Second)
		if err != nil {
			return -1, err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(raw)); err != nil {
			return -1, err.Error()
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		b := new(bytes.Buffer)
		b.ReadFrom(resp.Body)
		return resp.StatusCode, strings.TrimSpace(b.String())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := send("GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy does not answer on %s:\n%s", front, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.reached()
	return send
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// req is a raw HTTP/1.1 request with a JSON body (Content-Length set).
func req(method, target, body string) string {
	return jsonReq(method, target, body, fmt.Sprintf("Content-Length: %d\r\n", len(body)))
}

func jsonReq(method, target, body, extra string) string {
	return method + " " + target + " HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\n" + extra + "\r\n" + body
}

// execBody is the body edgecert's Docker client sends for cmd.
func execBody(cmd ...string) string {
	b, _ := json.Marshal(map[string]any{"User": "", "Privileged": false, "Tty": false, "AttachStdin": false,
		"AttachStderr": true, "AttachStdout": true, "DetachKeys": "", "Env": nil, "WorkingDir": "", "Cmd": cmd, "Detach": false})
	return string(b)
}

func TestProxyPassesEdgecertsCalls(t *testing.T) {
	e := &engine{}
	send := startProxy(t, e)
	nginx, apache := containers["nginx"].id, containers["apache"].id
	for _, tc := range []struct {
		desc, raw string
		want      string // what the engine receives
	}{
		{desc: "ping", raw: req("GET", "/_ping", ""), want: "GET /_ping"},
		{desc: "head ping", raw: req("HEAD", "/_ping", ""), want: "HEAD /_ping"},
		{desc: "version", raw: req("GET", "/v1.41/version", ""), want: "GET /v1.41/version"},
		{desc: "list", raw: req("GET", "/v1.41/containers/json?all=1", ""), want: "GET /v1.41/containers/json?all=1"},
		{desc: "events", raw: req("GET", "/v1.41/events?filters=%7B%7D", ""), want: "GET /v1.41/events?filters=%7B%7D"},
		{desc: "top", raw: req("GET", "/v1.41/containers/nginx/top", ""), want: "GET /v1.41/containers/nginx/top"},
		{desc: "exec inspect", raw: req("GET", "/v1.41/exec/0123abcd/json", ""), want: "GET /v1.41/exec/0123abcd/json"},
		{desc: "config test, by name, sent on to the ID", raw: req("POST", "/v1.41/containers/nginx/exec", execBody("nginx", "-t")),
			want: "POST /v1.41/containers/" + nginx + "/exec " + execBody("nginx", "-t")},
		{desc: "config test, no version prefix", raw: req("POST", "/containers/"+nginx+"/exec", execBody("nginx", "-t")),
			want: "POST /containers/" + nginx + "/exec " + execBody("nginx", "-t")},
		{desc: "the label's config test, split as edgecert splits it", raw: req("POST", "/v1.41/containers/apache/exec", execBody("apachectl", "configtest")),
			want: "POST /v1.41/containers/" + apache + "/exec " + execBody("apachectl", "configtest")},
		{desc: "the label's reload command", raw: req("POST", "/v1.41/containers/apache/exec", execBody("apachectl", "graceful")),
			want: "POST /v1.41/containers/" + apache + "/exec " + execBody("apachectl", "graceful")},
		{desc: "nginx-proxy's reload", raw: req("POST", "/v1.41/containers/nginxproxy/exec", execBody("nginx", "-s", "reload")),
			want: "POST /v1.41/containers/" + containers["nginxproxy"].id + "/exec " + execBody("nginx", "-s", "reload")},
		{desc: "exec start", raw: req("POST", "/v1.41/exec/0123abcd/start", `{"Detach":false,"Tty":false}`),
			want: `POST /v1.41/exec/0123abcd/start {"Detach":false,"Tty":false}`},
		{desc: "HUP", raw: req("POST", "/v1.41/containers/nginx/kill?signal=HUP", ""), want: "POST /v1.41/containers/" + nginx + "/kill?signal=HUP"},
		{desc: "the label's signal", raw: req("POST", "/v1.41/containers/apache/kill?signal=USR1", ""), want: "POST /v1.41/containers/" + apache + "/kill?signal=USR1"},
	} {
		code, body := send(tc.raw)
		got := e.reached()
		if code >= 300 || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %d %q; the engine got %q, want %q", tc.desc, code, body, got, tc.want)
		}
	}
}

// TestProxyRefusesTheWaysAround: each request is answered 403 by the proxy
// and never reaches the engine.
func TestProxyRefusesTheWaysAround(t *testing.T) {
	e := &engine{}
	send := startProxy(t, e)
	nginxTest := execBody("nginx", "-t")
	withKey := func(key, value string) string { // nginx -t with one more key
		return strings.TrimSuffix(nginxTest, "}") + `,"` + key + `":` + value + "}"
	}
	pad := strings.Repeat("A", 20<<10)
	for _, tc := range []struct{ desc, raw, why string }{
		{"privileged", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":["nginx","-t"],"Privileged":true}`), "Privileged must be false"},
		{"privileged, key escaped", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":["nginx","-t"],"Privil\u0065ged":true}`), "Privileged must be false"},
		{"privileged, key in lower case", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":["nginx","-t"],"privileged":true}`), "privileged must be false"},
		{"privileged past 16 KB of Env padding", req("POST", "/v1.41/containers/nginx/exec", `{"Env":["X=`+pad+`"],"Cmd":["nginx","-t"],"Privileged":true}`), ""},
		{"privileged in a HostConfig", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":["nginx","-t"],"HostConfig":{"Privileged":true}}`), "not one edgecert sends"},
		{"user 0", req("POST", "/v1.41/containers/nginx/exec", withKey("User", `"0"`)), ""},
		{"user root, twice", req("POST", "/v1.41/containers/nginx/exec", `{"User":"","User":"root","Cmd":["nginx","-t"]}`), "twice"},
		{"user in two cases", req("POST", "/v1.41/containers/nginx/exec", `{"User":"","user":"0","Cmd":["nginx","-t"]}`), "twice"},
		{"user with a long s (Go folds it to User)", req("POST", "/v1.41/containers/nginx/exec", `{"U\u017fer":"0","Cmd":["nginx","-t"]}`), "not one edgecert sends"},
		{"env", req("POST", "/v1.41/containers/nginx/exec", `{"Env":["LD_PRELOAD=/tmp/x.so"],"Cmd":["nginx","-t"]}`), "Env must be null or empty"},
		{"working dir", req("POST", "/v1.41/containers/nginx/exec", withKey("WorkingDir", `"/tmp"`)), ""},
		{"stdin and tty", req("POST", "/v1.41/containers/nginx/exec", `{"AttachStdin":true,"Tty":true,"Cmd":["nginx","-t"]}`), "must be false"},
		{"a shell in the proxy", req("POST", "/v1.41/containers/nginx/exec", execBody("sh", "-c", "id")), "is not a command edgecert runs"},
		{"nginx -t with another config", req("POST", "/v1.41/containers/nginx/exec", execBody("nginx", "-t", "-c", "/tmp/evil.conf")), "is not a command edgecert runs"},
		{"the label's command joined", req("POST", "/v1.41/containers/apache/exec", execBody("apachectl configtest")), "is not a command edgecert runs"},
		{"nginx -t in the socket proxy itself", req("POST", "/v1.41/containers/socket-proxy/exec", nginxTest), "not a proxy edgecert reloads"},
		{"nginx -t in an app", req("POST", "/v1.41/containers/app/exec", nginxTest), "not a proxy edgecert reloads"},
		{"nginx -t in a proxy labelled false", req("POST", "/v1.41/containers/off/exec", nginxTest), "not a proxy edgecert reloads"},
		{"a container the engine does not know", req("POST", "/v1.41/containers/nosuch/exec", nginxTest), "no container nosuch"},
		{"Cmd as a string", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":"nginx -t"}`), "must be a list of strings"},
		{"no Cmd", req("POST", "/v1.41/containers/nginx/exec", `{"AttachStdout":true}`), "no Cmd"},
		{"two JSON values", req("POST", "/v1.41/containers/nginx/exec", nginxTest+`{"Privileged":true}`), "data after the value"},
		{"not JSON", req("POST", "/v1.41/containers/nginx/exec", `Cmd=nginx`), "not JSON"},
		{"a lone surrogate", req("POST", "/v1.41/containers/nginx/exec", `{"Cmd":["nginx","-t\ud800"]}`), "lone surrogate"},
		{"chunked", jsonReq("POST", "/v1.41/containers/nginx/exec", "d\r\n{\"Cmd\":[\"id\"]\r\n1\r\n}\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"), ""},
		{"chunked kill", jsonReq("POST", "/v1.41/containers/nginx/kill?signal=HUP", "b\r\nsignal=KILL\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"), ""},
		{"exec start with a tty", req("POST", "/v1.41/exec/0123abcd/start", `{"Detach":false,"Tty":true}`), "Tty must be false"},
		{"exec start detached", req("POST", "/v1.41/exec/0123abcd/start", `{"Detach":true}`), "Detach must be false"},
		{"kill, no signal (the engine's default is KILL)", req("POST", "/v1.41/containers/nginx/kill", ""), "exactly signal="},
		{"kill KILL", req("POST", "/v1.41/containers/nginx/kill?signal=KILL", ""), "is not container nginx's reload signal"},
		{"kill TERM", req("POST", "/v1.41/containers/nginx/kill?signal=TERM", ""), "reload signal"},
		{"kill 9", req("POST", "/v1.41/containers/nginx/kill?signal=9", ""), "reload signal"},
		{"kill USR1 where the label says HUP", req("POST", "/v1.41/containers/nginx/kill?signal=USR1", ""), "reload signal (HUP)"},
		{"kill two signals", req("POST", "/v1.41/containers/nginx/kill?signal=HUP&signal=KILL", ""), "exactly signal="},
		{"kill, the key percent-encoded", req("POST", "/v1.41/containers/nginx/kill?sig%6eal=KILL&signal=HUP", ""), "exactly signal="},
		{"kill, the signal in a form body", jsonReq("POST", "/v1.41/containers/nginx/kill?signal=HUP", "signal=KILL", "Content-Length: 11\r\n"), "a body"},
		{"kill HUP to an app", req("POST", "/v1.41/containers/app/kill?signal=HUP", ""), "not a proxy edgecert signals"},
		{"kill HUP to nginx-proxy (reloaded by exec)", req("POST", "/v1.41/containers/nginxproxy/kill?signal=HUP", ""), "not a proxy edgecert signals"},
		{"create a container", req("POST", "/v1.41/containers/create", `{"Image":"x","HostConfig":{"Privileged":true,"Binds":["/:/host"]}}`), ""},
		{"start", req("POST", "/v1.41/containers/nginx/start", ""), ""},
		{"stop", req("POST", "/v1.41/containers/nginx/stop", ""), ""},
		{"delete", req("DELETE", "/v1.41/containers/nginx?force=1", ""), ""},
		{"attach", req("POST", "/v1.41/containers/nginx/attach?stream=1&stdin=1", ""), ""},
		{"archive upload", req("PUT", "/v1.41/containers/nginx/archive?path=/etc", "x"), ""},
		{"images", req("GET", "/v1.41/images/json", ""), ""},
		{"info", req("GET", "/v1.41/info", ""), ""},
		{"volumes", req("POST", "/v1.41/volumes/create", `{"Name":"x"}`), ""},
		{"exec with a trailing slash", req("POST", "/v1.41/containers/nginx/exec/", nginxTest), ""},
		{"exec with a double slash", req("POST", "//containers/nginx/exec", nginxTest), ""},
		{"exec with an encoded slash", req("POST", "/v1.41/containers/..%2Fnginx/exec", nginxTest), ""},
		{"exec by GET", req("GET", "/v1.41/containers/nginx/exec", ""), ""},
	} {
		code, body := send(tc.raw)
		got := e.reached()
		if code != http.StatusForbidden || len(got) != 0 || !strings.Contains(body, tc.why) {
			t.Errorf("%s: %d %q, the engine got %q; want 403 saying %q, and nothing at the engine", tc.desc, code, body, got, tc.why)
		}
	}
}
