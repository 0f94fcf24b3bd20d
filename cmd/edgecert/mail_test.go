package main

import (
	"context"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// smtpSink is a plain SMTP server that keeps the last message's DATA.
func smtpSink(t *testing.T) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tp := textproto.NewConn(c)
		tp.PrintfLine("220 sink ESMTP")
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
			case "EHLO", "HELO":
				tp.PrintfLine("250-sink\r\n250 8BITMIME")
			case "DATA":
				tp.PrintfLine("354 go on")
				data, err := tp.ReadDotBytes()
				if err != nil {
					return
				}
				got <- string(data)
				tp.PrintfLine("250 kept")
			case "QUIT":
				tp.PrintfLine("221 bye")
				return
			default:
				tp.PrintfLine("250 ok")
			}
		}
	}()
	return ln.Addr().String(), got
}

func TestMailHasTheHeadersMailServersExpect(t *testing.T) {
	addr, got := smtpSink(t)
	n := newNotifier(notifyConfig{SMTPAddr: addr, SMTPFrom: "edgecert@b.test", SMTPTo: []string{"ops@d.test"}, SMTPTLS: "auto"}, t.TempDir(), quietLog())
	nt := Notice{Event: noticeFailure, Cert: "site", At: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC), Text: "certificate site FAILED: no such host"}
	if err := n.mail(context.Background(), nt); err != nil {
		t.Fatal(err)
	}
	msg := <-got
	for _, want := range []string{"From: <edgecert@b.test>", "To: <ops@d.test>", "Subject: [edgecert] failure: site", "Date: Mon, 30 Nov 2026 03:00:00 +0000",
		"Message-ID: <", "certificate site FAILED: no such host"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the message lacks %q:\n%s", want, msg)
		}
	}
}

func TestSMTPTLSPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy string
		port   int
		auth   bool
		want   string
	}{
		{"auto", 465, false, "implicit"},
		{"auto", 587, true, "starttls"},
		{"auto", 25, false, "opportunistic"},
		{"none", 25, true, "none"},
		{"implicit", 2465, false, "implicit"},
	} {
		if got := smtpTLS(tc.policy, tc.port, tc.auth); got != tc.want {
			t.Errorf("smtpTLS(%q, %d, auth %v) = %s, want %s", tc.policy, tc.port, tc.auth, got, tc.want)
		}
	}
}
