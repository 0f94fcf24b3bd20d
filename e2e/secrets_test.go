package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSecretsNeverLeave: a DNS-01 order fails at a DNS provider's API that
// answers with everything it was sent (the token in its URL's query and
// the password of its basic auth, as lego then puts both in its error),
// with notices going to a webhook whose URL carries a key and to an SMTP
// server, in cluster mode. None of the three secrets appears in any place
// text leaves edgecert: docker logs, status --json, the state directory,
// the webhook bodies, the mail, etcd, the metrics. Each sink must also show
// that the failure reached it, so that a count of 0 means redacted, not
// absent.
func TestSecretsNeverLeave(t *testing.T) {
	t.Parallel()
	secret := func(kind string) string {
		b := make([]byte, 10)
		rand.Read(b)
		return kind + hex.EncodeToString(b)
	}
	token, password, hookKey := secret("tok"), secret("pw"), secret("key")

	api := newLeakyAPI(t)
	hooks := newReceiver(t)
	mail := newMailSink(t)
	etcd := startEtcd(t, "secret")
	pebble, err := startPebble("pebble-secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker("rm", "-f", pebble) })
	s := clusterHost(t, "secret", 1, "pebble-secret", etcd,
		"EDGECERT_DNS_PROVIDER=httpreq", "HTTPREQ_ENDPOINT="+api.url+"/dns?token="+token,
		"HTTPREQ_USERNAME=edgecert", "HTTPREQ_PASSWORD="+password,
		"EDGECERT_WEBHOOK_URLS="+hooks.url+"/generic?key="+hookKey,
		"EDGECERT_SMTP_ADDR="+mail.addr, "EDGECERT_SMTP_FROM=edgecert@secret.test", "EDGECERT_SMTP_TO=ops@secret.test",
		"EDGECERT_SMTP_TLS=none", "EDGECERT_METRICS_ADDR=:9090")
	s.startApp("site", map[string]string{"domains": "site.secret.test", "name": "site", "challenge": "dns-01"})

	// The order fails at the API, which got the secrets, and the failure
	// is told to every sink.
	var last string
	if err := waitUntil(150*time.Second, func() error {
		c, _ := s.cert("site")
		last = c.LastError
		switch {
		case api.calls() == 0:
			return fmt.Errorf("the DNS API was not called yet")
		case c.LastError == "":
			return fmt.Errorf("no failure in status yet: %+v", c)
		case len(hooks.events("/generic", "site")) == 0:
			return fmt.Errorf("no failure notice at the webhook yet")
		case len(mail.messages()) == 0:
			return fmt.Errorf("no mail yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !api.saw(token, password) {
		t.Fatalf("the DNS API did not get the token and password: the test proves nothing")
	}
	if !strings.Contains(last, redactedMark) {
		t.Errorf("status's last error %q: want the API's answer with %s in place of the secrets", last, redactedMark)
	}

	status, code := s.cli("status", "--json")
	if code != 0 && code != 1 {
		t.Fatalf("status --json: exit %d: %s", code, status)
	}
	ip, _ := docker("inspect", "--format", "{{(index .NetworkSettings.Networks \""+s.netName()+"\").IPAddress}}", s.edgecert)
	metrics := httpBody(t, "http://"+strings.TrimSpace(ip)+":9090/metrics")
	hookBodies, _ := json.Marshal(hooks.all())
	sinks := []struct {
		name, text string
		shows      string // what proves the failure reached the sink
	}{
		{"docker logs", s.logs(), "httpreq"},
		{"status --json", status, redactedMark},
		{"state directory", readTree(t, filepath.Join(s.dir, "state")), redactedMark},
		{"webhook bodies", string(hookBodies), "site"},
		{"mail", strings.Join(mail.messages(), "\n"), "site"},
		{"etcd", etcdDump(t, etcd.ip(0), "/e2e-"+runID+"-secret/"), redactedMark},
		{"metrics", metrics, "edgecert_orders_total"},
	}
	for _, sink := range sinks {
		n := 0
		for _, sec := range []string{token, password, hookKey, base64.StdEncoding.EncodeToString([]byte("edgecert:" + password))} {
			n += strings.Count(sink.text, sec)
		}
		t.Logf("MEASURE secrets sink=%q bytes=%d secret_occurrences=%d", sink.name, len(sink.text), n)
		if n != 0 {
			t.Errorf("%s holds a secret %d times", sink.name, n)
		}
		if !strings.Contains(sink.text, sink.shows) {
			t.Errorf("%s does not show the failure (%q): a count of 0 there proves nothing", sink.name, sink.shows)
		}
	}
}

const redactedMark = "[redacted]"

// leakyAPI is a DNS provider's API (lego's httpreq protocol) that refuses
// every request and answers with what it was sent, credentials included.
type leakyAPI struct {
	url string
	mu  sync.Mutex
	got []string
}

func newLeakyAPI(t *testing.T) *leakyAPI {
	t.Helper()
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatalf("listen on the network's gateway: %v", err)
	}
	a := &leakyAPI{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		seen := r.URL.String() + " " + user + ":" + pass
		a.mu.Lock()
		a.got = append(a.got, seen)
		a.mu.Unlock()
		http.Error(w, "refused "+seen, http.StatusForbidden)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *leakyAPI) calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

func (a *leakyAPI) saw(all ...string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, g := range a.got {
		ok := true
		for _, s := range all {
			ok = ok && strings.Contains(g, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func (r *receiver) all() map[string][]map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]map[string]any{}
	for k, v := range r.got {
		out[k] = append([]map[string]any(nil), v...)
	}
	return out
}

// mailSink is an SMTP server on the network's gateway that keeps every
// message's DATA.
type mailSink struct {
	addr string
	mu   sync.Mutex
	msgs []string
}

func newMailSink(t *testing.T) *mailSink {
	t.Helper()
	ln, err := net.Listen("tcp", subnet+".1:0")
	if err != nil {
		t.Fatalf("listen on the network's gateway: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	m := &mailSink{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *mailSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	tp := textproto.NewConn(c)
	tp.PrintfLine("220 sink ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		switch strings.ToUpper(strings.Fields(line + " x")[0]) {
		case "EHLO", "HELO":
			tp.PrintfLine("250-sink\r\n250 8BITMIME")
		case "DATA":
			tp.PrintfLine("354 go on")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, string(data))
			m.mu.Unlock()
			tp.PrintfLine("250 kept")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("250 ok")
		}
	}
}

func (m *mailSink) messages() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.msgs...)
}

// readTree is every file under dir, each after its path.
func readTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "== %s\n%s\n", path, data)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return b.String()
}

// etcdDump is every key and value under prefix, through etcd's JSON
// gateway (values decoded).
func etcdDump(t *testing.T, ip, prefix string) string {
	t.Helper()
	end := []byte(prefix)
	end[len(end)-1]++
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(prefix)),
		"range_end": base64.StdEncoding.EncodeToString(end)})
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post("http://"+ip+":2379/v3/kv/range", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("etcd range: %v", err)
	}
	defer resp.Body.Close()
	var r struct {
		KVs []struct{ Key, Value string } `json:"kvs"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil || len(r.KVs) == 0 {
		t.Fatalf("etcd range under %s: %v: %.300s", prefix, err, raw)
	}
	var b strings.Builder
	for _, kv := range r.KVs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		v, _ := base64.StdEncoding.DecodeString(kv.Value)
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	return b.String()
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
