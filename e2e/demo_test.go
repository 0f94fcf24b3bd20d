package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs compose/demo/docker-compose.yml as a new user would (with
// the images built here instead of pulled) and checks that the demo domain
// is served with a certificate from the demo's Pebble, on the published port.
func TestDemo(t *testing.T) {
	t.Parallel()
	compose, _ := filepath.Abs("../compose/demo/docker-compose.yml")
	b := make([]byte, 1)
	_, _ = rand.Read(b)
	demoNet := fmt.Sprintf("10.233.%d", int(b[0])%250+1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	env := append(os.Environ(), "EDGECERT_IMAGE="+edgecertImage, "NGINX_IMAGE=edgecert-nginx:e2e", "PEBBLE_IMAGE=edgecert-pebble:e2e",
		"CHALLTESTSRV_IMAGE=edgecert-pebble:e2e", "DEMO_APP_IMAGE=edgecert-testapp:e2e", "DEMO_NET="+demoNet, "DEMO_HTTPS_PORT="+port)
	dc := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", "e2e" + runID + "demo", "-f", compose}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dc("logs", "--tail", "40", "edgecert", "nginx")
			t.Logf("--- demo logs:\n%s", out)
		}
		dc("down", "-v", "--remove-orphans")
	})
	if out, err := dc("up", "-d"); err != nil {
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}

	// The root of the demo Pebble's TLS, from the volume edgecert trusts it by.
	rootFile := filepath.Join(t.TempDir(), "minica.pem")
	if err := waitUntil(30*time.Second, func() error {
		out, err := docker("cp", "edgecert-demo:/pebble-certs/pebble.minica.pem", rootFile)
		if err != nil {
			return errString(out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(rootFile)
	tlsRoots := x509.NewCertPool()
	tlsRoots.AppendCertsFromPEM(pem)
	client := pebbleClientWith(tlsRoots, "pebble")
	var issuing *x509.CertPool
	if err := waitUntil(30*time.Second, func() error {
		resp, err := client.Get("https://" + demoNet + ".251:15000/roots/0")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		issuing = x509.NewCertPool()
		if !issuing.AppendCertsFromPEM(body) {
			return errString(fmt.Sprintf("no root yet: %s %.200q", resp.Status, body))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// What the README tells a new user to look at: the published port.
	const domain = "demo.edgecert.test"
	if err := waitUntil(2*time.Minute, func() error {
		conn, err := tls.DialWithDialer(&netDialer, "tcp", "127.0.0.1:"+port, &tls.Config{ServerName: domain, RootCAs: issuing})
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	}); err != nil {
		t.Fatalf("the demo never served a certificate from its Pebble on 127.0.0.1:%s: %v", port, err)
	}
	out, err := docker("exec", "edgecert-demo", "edgecert", "status", "demo")
	if err != nil || !strings.Contains(out, "valid") {
		t.Errorf("status in the demo: %v\n%s", err, out)
	}
}
