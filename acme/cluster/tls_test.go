package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgecert/edgecert/acme"
)

// writeCert makes a certificate signed by parent (self-signed when nil)
// and writes it and its key as PEM files dir/name.pem and dir/name-key.pem.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

// TestTLSClientAuth: etcd serving TLS and asking for client certificates
// (as production etcd runs); the files given as EDGECERT_ETCD_CA, _CERT and
// _KEY let a host in, and without the client certificate it stays out.
func TestTLSClientAuth(t *testing.T) {
	bin := etcdBinary(t)
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{Subject: pkix.Name{CommonName: "test etcd CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca, caKey)
	writeCert(t, dir, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "edgecert"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
	client := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--name", "m1", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "m1="+peer,
		"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
		"--client-cert-auth", "--trusted-ca-file", filepath.Join(dir, "ca.pem"), "--log-level", "error")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	join := func(tc *tlsFiles) (*Cluster, func()) {
		cfg, err := TLSConfig(tc.ca, tc.cert, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		return running(t, Config{Endpoints: []string{client}, TLS: cfg, Node: "a", Prefix: "/tls/"})
	}
	c, stop := join(&tlsFiles{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "client.pem"), key: filepath.Join(dir, "client-key.pem")})
	waitFor(t, 30*time.Second, func() error {
		if ok, why, _ := c.Reachable(); !ok {
			return errors.New(why)
		}
		return nil
	})
	stop()
	// Without a client certificate: never in.
	c, stop = join(&tlsFiles{ca: filepath.Join(dir, "ca.pem")})
	defer stop()
	waitFor(t, 30*time.Second, func() error {
		if ok, why, _ := c.Reachable(); ok || why == "not connected yet" {
			return fmt.Errorf("without a client certificate: reachable %v, %q (want a failed attempt)", ok, why)
		}
		return nil
	})
	if _, err := TLSConfig(filepath.Join(dir, "missing.pem"), "", ""); err == nil {
		t.Error("a missing CA file was taken")
	}
}

// tlsFiles are the three files a host gives.
type tlsFiles struct{ ca, cert, key string }

// TestAuthOnItsPrefix: etcd with authentication on, and edgecert's user
// allowed read and write on its prefix only (README's RBAC line): a host
// with the password joins and orders; with a wrong one it stays out.
func TestAuthOnItsPrefix(t *testing.T) {
	e := startEtcdServer(t)
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{e.client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "edgecert", "edgecert-pw"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "edgecert"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "edgecert", "/auth/", clientv3.GetPrefixRangeEnd("/auth/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "edgecert", "edgecert"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("etcd auth set-up step %d: %v", i, err)
		}
	}
	ca := &fakeCA{}
	join := func(password string) (*Cluster, func()) {
		return running(t, Config{Endpoints: []string{e.client}, Username: "edgecert", Password: password, Node: "a", Prefix: "/auth/"})
	}
	c, stop := join("edgecert-pw")
	waitFor(t, 30*time.Second, func() error {
		if ok, why, _ := c.Reachable(); !ok {
			return errors.New(why)
		}
		return nil
	})
	if _, _, err := c.Issuer(ca).Obtain(context.Background(), acme.Order{Domains: []string{"auth.test"}, KeyType: "ec256"}); err != nil {
		t.Fatalf("ordering with the prefix's permissions only: %v", err)
	}
	stop()
	c, stop = join("wrong")
	defer stop()
	waitFor(t, 30*time.Second, func() error {
		if ok, why, _ := c.Reachable(); ok || !strings.Contains(why, "authentication failed") {
			return fmt.Errorf("with a wrong password: reachable %v, %q", ok, why)
		}
		return nil
	})
}
