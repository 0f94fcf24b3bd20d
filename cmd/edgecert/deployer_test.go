package main

import (
	"slices"
	"strings"
	"testing"
)

func TestDeployHintsForMissingFiles(t *testing.T) {
	p := proxyDeployer{labelPrefix: "edgecert", certsDir: "/etc/edgecert/certs", has: func(n string) bool { return n == "site" }}
	got := p.hints([]missingFile{
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

func TestMissingFiles(t *testing.T) {
	// Config test outputs as nginx 1.22 and Apache 2.4 print them.
	out := `exit code 1: 2026/11/23 18:22:30 [emerg] 9#9: cannot load certificate "/etc/nginx/certs/two/fullchain.pem": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory:calling fopen(/etc/nginx/certs/two/fullchain.pem, r) error:10000080:BIO routines::no such file)
nginx: configuration file /etc/nginx/nginx.conf test failed
[emerg] cannot load certificate key "/etc/nginx/certs/three/privkey.pem": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory)
[emerg] cannot load certificate "/etc/nginx/certs/two/fullchain.pem": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory)
[emerg] cannot load certificate key "/etc/nginx/certs/four/privkey.pem": BIO_new_file() failed (SSL: error:8000000D:system library::Permission denied)
[emerg] cannot load certificate "/etc/ssl/other.crt": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory)
AH00526: Syntax error on line 7 of /etc/apache2/conf.d/site.conf:
SSLCertificateFile: file '/etc/apache2/certs/five/fullchain.pem' does not exist or is empty`
	got := missingFiles(out)
	want := []missingFile{
		{Path: "/etc/nginx/certs/two/fullchain.pem", Cert: "two"},
		{Path: "/etc/nginx/certs/three/privkey.pem", Cert: "three"},
		{Path: "/etc/apache2/certs/five/fullchain.pem", Cert: "five"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("MissingFiles = %+v\nwant %+v (a permission error and a file not named as edgecert names them are not missing certificates)", got, want)
	}
	if got := missingFiles("nginx: configuration file /etc/nginx/nginx.conf test is successful"); len(got) != 0 {
		t.Errorf("missingFiles(success) = %+v", got)
	}
}
