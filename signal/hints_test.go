package signal

import (
	"slices"
	"testing"
)

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
	got := MissingFiles(out)
	want := []MissingFile{
		{Path: "/etc/nginx/certs/two/fullchain.pem", Cert: "two"},
		{Path: "/etc/nginx/certs/three/privkey.pem", Cert: "three"},
		{Path: "/etc/apache2/certs/five/fullchain.pem", Cert: "five"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("MissingFiles = %+v\nwant %+v (a permission error and a file not named as edgecert names them are not missing certificates)", got, want)
	}
	if got := MissingFiles("nginx: configuration file /etc/nginx/nginx.conf test is successful"); len(got) != 0 {
		t.Errorf("MissingFiles(success) = %+v", got)
	}
}
