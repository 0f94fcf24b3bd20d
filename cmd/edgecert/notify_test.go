package main

import (
	"io"
	"log/slog"
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
	if r := redact("https://hooks.slack.com/services/T000/B000/SECRET"); strings.Contains(r, "SECRET") {
		t.Errorf("redact kept the secret: %s", r)
	}
}
