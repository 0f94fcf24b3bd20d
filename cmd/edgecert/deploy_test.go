package main

import (
	"strings"
	"testing"

	"github.com/edgecert/edgecert/signal"
)

func TestDeployHintsForMissingFiles(t *testing.T) {
	a := &acmeDeployer{labelPrefix: "edgecert", certsDir: "/etc/edgecert/certs", known: func(n string) bool { return n == "site" }}
	got := a.hints([]signal.MissingFile{
		{Path: "/etc/nginx/certs/ghost/fullchain.pem", Cert: "ghost"},
		{Path: "/etc/nginx/wrong/site/fullchain.pem", Cert: "site"},
	})
	if len(got) != 2 {
		t.Fatalf("hints = %q, want two", got)
	}
	if !strings.Contains(got[0], `certificate "ghost"`) || !strings.Contains(got[0], "no running container asks for") ||
		!strings.Contains(got[0], "edgecert.name=ghost") {
		t.Errorf("unknown certificate: %q", got[0])
	}
	if !strings.Contains(got[1], `edgecert has certificate "site" in /etc/edgecert/certs/site`) ||
		!strings.Contains(got[1], "mount the certificate volume at /etc/nginx/wrong") {
		t.Errorf("known certificate, wrong mount: %q", got[1])
	}
}
