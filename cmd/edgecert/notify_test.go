package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

func drain(n *notifier) []string {
	var got []string
	for {
		select {
		case nt := <-n.notices:
			got = append(got, string(nt.Event))
		default:
			return got
		}
	}
}

func TestNotifierOneNoticePerChange(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	n := newNotifier(notifyConfig{Webhooks: []string{"http://hooks.example/x"}}, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	n.clock = func() time.Time { return now }
	s := acme.CertStatus{Name: "site", Domains: []string{"site.example.com"}, State: "failing",
		NotBefore: now.Add(-80 * 24 * time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)}

	steps := []struct {
		desc  string
		after time.Duration
		do    func()
		want  string
	}{
		{desc: "first failure", do: func() { n.CertEvent("site", acme.Event{Kind: "order_failed", Detail: "timeout"}, s) }, want: "failure"},
		{desc: "same episode, an hour on", after: time.Hour, do: func() { n.CertEvent("site", acme.Event{Kind: "reload_failed"}, s) }, want: ""},
		{desc: "expiring while failing: no second condition", after: time.Hour, do: func() { n.checkExpiry([]acme.CertStatus{s}) }, want: ""},
		{desc: "a day later: a reminder", after: 24 * time.Hour, do: func() { n.CertEvent("site", acme.Event{Kind: "order_failed"}, s) }, want: "reminder"},
		{desc: "recovered", after: time.Hour, do: func() { s.State = "valid"; n.CertEvent("site", acme.Event{Kind: "reload_proven"}, s) }, want: "recovery"},
		{desc: "proven again: nothing to say", after: time.Hour, do: func() { n.CertEvent("site", acme.Event{Kind: "reload_proven"}, s) }, want: ""},
		{desc: "near expiry without renewal", after: time.Hour, do: func() { n.checkExpiry([]acme.CertStatus{s}) }, want: "expiring"},
		{desc: "the hourly check again", after: time.Hour, do: func() { n.checkExpiry([]acme.CertStatus{s}) }, want: ""},
	}
	for _, st := range steps {
		now = now.Add(st.after)
		st.do()
		if got := strings.Join(drain(n), ","); got != st.want {
			t.Fatalf("%s: notices %q, want %q", st.desc, got, st.want)
		}
	}
}

func TestNoticeTextAndRedaction(t *testing.T) {
	txt := noticeText(Notice{Event: "failure", Cert: "site", Domains: []string{"a.example", "b.example"}, Host: "h", Error: "nginx -t\nfailed"})
	if !strings.Contains(txt, "site (a.example, b.example) FAILED: nginx -t failed") {
		t.Errorf("text = %q", txt)
	}
	if r := destName("https://hooks.slack.com/services/T000/B000/SECRET"); strings.Contains(r, "SECRET") {
		t.Errorf("redact kept the secret: %s", r)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestMailGivesUpOnAServerThatNeverGreets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it, say nothing
		}
	}()
	n := newNotifier(notifyConfig{SMTPAddr: ln.Addr().String(), SMTPFrom: "a@b.test", SMTPTo: []string{"c@d.test"}}, t.TempDir(), quietLog())
	n.smtpTimeout = 300 * time.Millisecond
	start := time.Now()
	err = n.mail(context.Background(), Notice{Event: noticeFailure, Cert: "site"})
	if took := time.Since(start); err == nil || took > 3*time.Second {
		t.Fatalf("mail to a silent server: %v after %s; want an error within the deadline", err, took)
	}
}

func TestHookWhoseChildHoldsItsOutputReturns(t *testing.T) {
	var logs strings.Builder
	n := newNotifier(notifyConfig{Hook: []string{"sh", "-c", "sleep 30 & echo started"}}, t.TempDir(),
		slog.New(slog.NewTextHandler(&logs, nil)))
	n.hookWaitDelay = 200 * time.Millisecond
	start := time.Now()
	n.runHook(context.Background(), acme.CertStatus{Name: "site"})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("runHook took %s: a background child holding stdout blocked it", took)
	}
	n = newNotifier(notifyConfig{Hook: []string{"sh", "-c", "sleep 30; echo never"}}, t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
	n.hookTimeout, n.hookWaitDelay = 300*time.Millisecond, 200*time.Millisecond
	start = time.Now()
	n.runHook(context.Background(), acme.CertStatus{Name: "site"})
	if took := time.Since(start); took > 5*time.Second || !strings.Contains(logs.String(), "killed after 300ms") {
		t.Fatalf("a hook past its time: took %s, log:\n%s", took, logs.String())
	}
}

func TestHookEnvironmentHoldsNoSecret(t *testing.T) {
	t.Setenv("EDGECERT_SMTP_PASSWORD", "hunter2")
	t.Setenv("EDGECERT_ACME_EAB_HMAC", "c2VjcmV0")
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	n := newNotifier(notifyConfig{Hook: []string{"sh", "-c", "env > " + out}, CertsDir: "/certs"}, dir, quietLog())
	n.runHook(context.Background(), acme.CertStatus{Name: "site", Domains: []string{"a.test"}, Serial: "01"})
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := string(data)
	if strings.Contains(env, "hunter2") || strings.Contains(env, "c2VjcmV0") || !strings.Contains(env, "EDGECERT_FULLCHAIN=/certs/site/fullchain.pem") {
		t.Fatalf("hook environment:\n%s", env)
	}
	for _, line := range strings.Split(strings.TrimSpace(env), "\n") {
		k, _, _ := strings.Cut(line, "=")
		if k != "PATH" && k != "PWD" && k != "SHLVL" && k != "_" && k != "RENEWED_LINEAGE" && k != "RENEWED_DOMAINS" && !strings.HasPrefix(k, "EDGECERT_") {
			t.Errorf("the hook got %s, which is not documented", k)
		}
	}
}

func TestFailedWebhookNamesNoSecret(t *testing.T) {
	var logs strings.Builder
	n := newNotifier(notifyConfig{}, t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
	n.http.Timeout = time.Second
	err := n.post(context.Background(), "http://user:pa55word@127.0.0.1:1/hooks/T0KEN?token=s3cret#frag", []byte("{}"))
	if err == nil {
		t.Fatal("post to a closed port succeeded")
	}
	for _, secret := range []string{"pa55word", "T0KEN", "s3cret", "user"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %q: %v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "http://127.0.0.1:1/…") {
		t.Errorf("the error does not say where it went: %v", err)
	}
	for _, u := range []string{"https://u:p@hooks.slack.com/services/T000/B000/SECRET", "https://h.test/x?token=SECRET", "https://h.test/#SECRET"} {
		if r := destName(u); strings.Contains(r, "SECRET") || strings.Contains(r, "u:p") {
			t.Errorf("destName(%s) = %s", u, r)
		}
	}
}

func TestAStuckWebhookBlocksNeitherExpiryChecksNorSaving(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	dir := t.TempDir()
	n := newNotifier(notifyConfig{Webhooks: []string{srv.URL + "/x"}}, dir, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, func() []acme.CertStatus { return nil }) }()
	defer func() { cancel(); <-done }()
	s := acme.CertStatus{Name: "a", State: acme.StateFailing}
	n.CertEvent("a", acme.Event{Kind: acme.EventOrderFailed}, s) // its notice hangs at the webhook
	s.Name = "b"
	n.CertEvent("b", acme.Event{Kind: acme.EventOrderFailed}, s)
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "notify.json"))
		if strings.Contains(string(data), `"b"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification state not saved while a webhook hangs: %s", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClusterNotices(t *testing.T) {
	n := newNotifier(notifyConfig{Webhooks: []string{"http://hooks.example/x"}}, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	texts := func() []string {
		var got []string
		for {
			select {
			case nt := <-n.notices:
				got = append(got, nt.Text)
			default:
				return got
			}
		}
	}
	n.ClusterState(true, "")
	if got := texts(); len(got) != 0 {
		t.Errorf("notices while in the cluster: %q", got)
	}
	n.ClusterState(false, "etcd lease lost (etcd unreachable, or no quorum)")
	n.ClusterState(false, "etcd lease lost (etcd unreachable, or no quorum)")
	got := texts()
	if len(got) != 1 || !strings.Contains(got[0], "CLUSTER UNREACHABLE") || !strings.Contains(got[0], "ordering nothing") || !strings.Contains(got[0], "no quorum") {
		t.Errorf("losing the cluster: %q", got)
	}
	n.ClusterState(true, "")
	if got := texts(); len(got) != 1 || !strings.Contains(got[0], "back in the cluster") {
		t.Errorf("back in the cluster: %q", got)
	}
}
