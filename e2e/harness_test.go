// Package e2e tests edgecert as a user runs it: the edgecert:local image
// beside real nginx containers on a real Docker Engine, with Pebble issuing
// real certificates over real HTTP-01. It drives everything through the
// docker CLI and knows nothing of edgecert's internals.
//
// Run with `make e2e` (EDGECERT_E2E=1); without that variable it skips.
package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	runID      string
	netName    string
	subnet     string // "10.231.N" (a /24)
	nextIP     atomic.Int32
	pebbleIPs  sync.Map // alias -> address
	challIP    string
	pebbleRoot string // host path of the Pebbles' TLS root, for EDGECERT_ACME_ROOTS
	hostDir    string
)

// edgecertImage is the image under test: edgecert:local (make image), or
// EDGECERT_E2E_IMAGE to run the suite against another build beside it.
var edgecertImage = cmp.Or(os.Getenv("EDGECERT_E2E_IMAGE"), "edgecert:local")

var images = []string{edgecertImage, "edgecert-nginx:e2e", "edgecert-apache:e2e", "edgecert-pebble:e2e", "edgecert-testapp:e2e", "edgecert-haproxy:e2e", "edgecert-etcd:e2e"}

func TestMain(m *testing.M) {
	if os.Getenv("EDGECERT_E2E") != "1" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "e2e: EDGECERT_E2E is not 1 in CI: the suite must run there (use make e2e)")
			os.Exit(1)
		}
		fmt.Println("e2e: skipped: set EDGECERT_E2E=1 (make e2e does, after building the images)")
		os.Exit(0)
	}
	err := setup()
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup failed:", err)
	} else {
		code = m.Run()
	}
	teardown()
	os.Exit(code)
}

func setup() error {
	if out, err := docker("version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("no Docker Engine answers: %w: %s", err, out)
	}
	for _, img := range images {
		if out, err := docker("image", "inspect", "--format", "{{.Id}}", img); err != nil {
			return fmt.Errorf("image %s is missing (make test-images): %s", img, out)
		}
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	runID = hex.EncodeToString(b)
	var err error
	if hostDir, err = os.MkdirTemp("", "edgecert-e2e-"); err != nil {
		return err
	}
	// A subnet of our own, so that nginx can have fixed addresses that the
	// test DNS answers with; dynamic addresses come from the upper half.
	for try := 0; ; try++ {
		n := 1 + int(b[try%3])%250
		subnet = fmt.Sprintf("10.231.%d", n)
		netName = "e2e-" + runID
		ipRange := subnet + ".128/25"
		if onPodman {
			ipRange = subnet + ".0/24" // newIP
		}
		out, err := docker("network", "create", "--label", "edgecert-e2e="+runID, "--subnet", subnet+".0/24",
			"--ip-range", ipRange, "--gateway", subnet+".1", netName)
		if err == nil {
			break
		}
		if try == 5 {
			return fmt.Errorf("create network: %s", out)
		}
		b[0] += 17
	}
	nextIP.Store(10)
	challIP = newIP()
	if out, err := docker("run", "-d", "--name", "e2e-"+runID+"-chall", "--label", "edgecert-e2e="+runID, "--network", netName, "--ip", challIP,
		"edgecert-pebble:e2e", "/usr/bin/pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-dnsserver", ":8053", "-management", ":8055"); err != nil {
		return fmt.Errorf("start challtestsrv: %s", out)
	}
	if err := writePebbleTLS(); err != nil {
		return err
	}
	if _, err := startPebble("pebble"); err != nil {
		return err
	}
	return waitUntil(30*time.Second, func() error {
		_, err := challPost("/add-a", map[string]any{"host": "ready.test", "addresses": []string{"127.0.0.1"}})
		return err
	})
}

// pebbleAliases are the names Pebbles answer to: "pebble" is shared by the
// scenarios; the others belong to scenarios that stop their CA, read its log,
// or order in bulk (so the shared CA's latency stays that of a quiet CA).
var pebbleAliases = []string{"pebble", "pebble-import", "pebble-dns", "pebble-dnskey", "pebble-renew", "pebble-outage", "pebble-many", "pebble-twenty", "pebble-crash", "pebble-bench", "pebble-scale", "pebble-nsn", "pebble-clone", "pebble-cltake", "pebble-clquorum", "pebble-clcut", "pebble-clmany", "pebble-clfault", "pebble-clfault-ca", "pebble-clfault-other", "pebble-noari", "pebble-noari-ca", "pebble-secret", "pebble-ip", "pebble-persist"}

// writePebbleTLS makes a root and a server certificate for every Pebble
// alias, so that edgecert verifies each CA's TLS as it would Let's Encrypt's.
func writePebbleTLS() error {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgecert e2e Pebble TLS root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	root, _ = x509.ParseCertificate(rootDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"}, DNSNames: pebbleAliases,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, &key.PublicKey, rootKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pebbleRoot = filepath.Join(hostDir, "pebble-tls-root.pem")
	for _, f := range []struct {
		name string
		typ  string
		der  []byte
	}{{"pebble-tls-root.pem", "CERTIFICATE", rootDER}, {"pebble-tls-cert.pem", "CERTIFICATE", leafDER}, {"pebble-tls-key.pem", "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(filepath.Join(hostDir, f.name), pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startPebble runs a Pebble reachable as alias on the test network and
// waits until it answers; it returns the container's name.
func startPebble(alias string) (string, error) {
	return startPebbleDNS(alias, challIP+":8053")
}

// startPebbleDNS starts a Pebble that looks names up at dnsServer.
func startPebbleDNS(alias, dnsServer string) (string, error) {
	name := "e2e-" + runID + "-" + alias
	ip := newIP()
	if out, err := docker("run", "-d", "--name", name, "--label", "edgecert-e2e="+runID, "--network", netName, "--ip", ip,
		"--network-alias", alias,
		"-v", filepath.Join(hostDir, "pebble-tls-cert.pem")+":/test/certs/localhost/cert.pem:ro",
		"-v", filepath.Join(hostDir, "pebble-tls-key.pem")+":/test/certs/localhost/key.pem:ro",
		"edgecert-pebble:e2e", "/usr/bin/pebble", "-config", "/test/config/pebble-config.json", "-dnsserver", dnsServer); err != nil {
		return "", fmt.Errorf("start pebble %s: %s", alias, out)
	}
	pebbleIPs.Store(alias, ip)
	return name, waitPebble(alias)
}

// waitPebble waits until the Pebble known as alias serves its directory.
func waitPebble(alias string) error {
	return waitUntil(30*time.Second, func() error {
		_, err := pebbleGet(alias, "/dir", 14000)
		return err
	})
}

func teardown() {
	if runID == "" {
		return
	}
	// Keep the CAs' logs too: a CA's side of a failed order is half the story.
	if dir := os.Getenv("EDGECERT_E2E_LOGS"); dir != "" {
		for _, alias := range pebbleAliases {
			if out, err := docker("logs", "-t", "e2e-"+runID+"-"+alias); err == nil {
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, "ca-"+alias+".log"), []byte(out), 0o644)
			}
		}
	}
	if ids, _ := docker("ps", "-aq", "--filter", "label=edgecert-e2e="+runID); ids != "" {
		docker(append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	if ids, _ := docker("network", "ls", "-q", "--filter", "label=edgecert-e2e="+runID); ids != "" {
		docker(append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	docker("network", "rm", netName)
	os.RemoveAll(hostDir)
}

// docker runs the docker CLI and returns its combined output, trimmed.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// The engine the suite runs on: Docker's socket, or another one that
// speaks its API (Podman's: make test-podman) named by DOCKER_HOST, which
// the docker CLI the harness runs follows too. engineSocket is mounted into
// edgecert as /var/run/docker.sock.
var (
	engineSocket = cmp.Or(strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://"), "/var/run/docker.sock")
	onPodman     = os.Getenv("EDGECERT_E2E_PODMAN") == "1"
)

// macFor is the MAC address Docker gives a container with IPv4 ip:
// 02:42 and the address's four bytes.
func macFor(ip string) string {
	b := net.ParseIP(ip).To4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// podman runs Podman's own CLI against the suite's engine, for what its
// compatible API does not do as Docker does.
func podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func waitUntil(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pebbleClient(alias string) *http.Client {
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(pebbleRoot)
	pool.AppendCertsFromPEM(pem)
	return pebbleClientWith(pool, alias)
}

func pebbleClientWith(roots *x509.CertPool, name string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}}}
}

// pebbleGet GETs path from the Pebble known as alias, on its ACME (14000) or
// management (15000) port.
func pebbleGet(alias, path string, port int) ([]byte, error) {
	ip, ok := pebbleIPs.Load(alias)
	if !ok {
		return nil, fmt.Errorf("no Pebble %s", alias)
	}
	url := fmt.Sprintf("https://%s:%d%s", ip, port, path)
	resp, err := pebbleClient(alias).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body, err
}

// caRoots returns the root that signs the certificates the Pebble known as
// alias issues (it changes at every Pebble start).
func caRoots(t *testing.T, alias string) *x509.CertPool {
	t.Helper()
	pem, err := pebbleGet(alias, "/roots/0", 15000)
	if err != nil {
		t.Fatalf("Pebble root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("Pebble root is not PEM: %q", pem)
	}
	return pool
}

func challPost(path string, body any) ([]byte, error) {
	b, _ := json.Marshal(body)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+challIP+":8055"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return out, fmt.Errorf("challtestsrv %s: %d %s", path, resp.StatusCode, out)
	}
	return out, nil
}

// stack is one user's setup: an nginx, an edgecert and app containers, with
// their own volumes (host directories) and their own label prefix (with the
// run's id: two suites may share an engine), so that stacks run side by side
// on one engine without seeing each other.
type stack struct {
	t        *testing.T
	name     string
	pebble   string // the alias of this stack's CA
	prefix   string
	dir      string
	ip       string // nginx's fixed address; the test DNS points the stack's domains at it
	nginx    string
	edgecert string
	// extraArgs go to `docker run` of edgecert (mounts, for example).
	extraArgs []string
	noSocket  bool   // edgecert reaches Docker by DOCKER_HOST, not the mounted socket
	network   string // edgecert's network when not the shared one
	// alsoOn: networks edgecert is connected to as well, before its health
	// is waited for (a cluster's etcd network).
	alsoOn []string
	// unhealthy: the test expects this edgecert not to become healthy (a
	// host with the wrong cluster secret): startEdgecert does not wait.
	unhealthy bool
}

func newStack(t *testing.T, name string) *stack {
	t.Helper()
	dir := filepath.Join(hostDir, name)
	for _, d := range []string{"certs", "acme", "state", "conf"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &stack{t: t, name: name, pebble: "pebble", prefix: "e2e-" + runID + "-" + name, dir: dir,
		ip:    newIP(),
		nginx: "e2e-" + runID + "-" + name + "-nginx", edgecert: "e2e-" + runID + "-" + name + "-edgecert"}
	t.Cleanup(func() {
		// Keep every container's log for reading after the run (CI prints where).
		if dir := os.Getenv("EDGECERT_E2E_LOGS"); dir != "" {
			for _, c := range []string{s.edgecert, s.nginx} {
				out, _ := docker("logs", "-t", c)
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, strings.TrimPrefix(c, "e2e-"+runID+"-")+".log"), []byte(out), 0o644)
			}
		}
		if t.Failed() {
			for _, c := range []string{s.edgecert, s.nginx} {
				out, _ := docker("logs", "--tail", "60", c)
				t.Logf("--- last logs of %s:\n%s", c, out)
			}
		}
		if ids, _ := docker("ps", "-aq", "--filter", "label=edgecert-e2e-stack="+runID+"-"+name); ids != "" {
			docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
	})
	// Port 80 only, so nginx starts before any certificate exists.
	s.writeConf("00-http.conf", httpServer)
	return s
}

// up points domains at nginx, starts nginx (port 80 only) and edgecert, and
// then adds the TLS server block for certificate name, as a user would: nginx
// does not load it yet (its files do not exist); edgecert's reload will.
// It returns Pebble's current root.
func (s *stack) up(name string, domains ...string) *x509.CertPool {
	s.t.Helper()
	s.point(domains...)
	s.startNginx()
	s.startEdgecert()
	s.writeConf("10-"+name+".conf", tlsServer(name, domains...))
	return caRoots(s.t, s.pebble)
}

// newIP returns a fixed address for a container. On Docker the engine
// gives dynamic addresses from the upper half (--ip-range) and fixed ones
// come from the lower half; Podman's CNI allocator takes fixed addresses
// only inside --ip-range and hands dynamic ones out from its start, so
// there the range is the whole subnet and fixed addresses count down from
// its top.
func newIP() string {
	n := nextIP.Add(1)
	if onPodman {
		n = 264 - n // 11 -> .253, and down
	}
	return fmt.Sprintf("%s.%d", subnet, n)
}

func (s *stack) domain(host string) string { return host + "." + s.name + ".test" }

// point makes the test DNS answer domains with nginx's address.
func (s *stack) point(domains ...string) {
	s.t.Helper()
	for _, d := range domains {
		if _, err := challPost("/add-a", map[string]any{"host": d, "addresses": []string{s.ip}}); err != nil {
			s.t.Fatal(err)
		}
	}
}

func (s *stack) writeConf(file, text string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, "conf", file), []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// tlsServer returns an nginx server block for cert name serving domains.
func tlsServer(name string, domains ...string) string {
	return fmt.Sprintf(`server {
    listen 443 ssl;
    server_name %s;
    ssl_certificate     /etc/nginx/certs/%s/fullchain.pem;
    ssl_certificate_key /etc/nginx/certs/%s/privkey.pem;
    location / { return 200 "ok\n"; }
}
`, strings.Join(domains, " "), name, name)
}

func (s *stack) labels() []string {
	return []string{"--label", "edgecert-e2e=" + runID, "--label", "edgecert-e2e-stack=" + runID + "-" + s.name}
}

func (s *stack) startNginx() {
	s.t.Helper()
	s.startProxy(proxySpec{name: s.nginx, ip: s.ip, conf: "conf", labels: map[string]string{"nginx": "true"}})
}

// proxySpec describes a proxy container of a stack.
type proxySpec struct {
	name   string            // container name
	ip     string            // fixed address
	image  string            // default edgecert-nginx:e2e
	conf   string            // the stack directory mounted as its conf.d
	labels map[string]string // edgecert labels, without the prefix
	raw    map[string]string // other labels, as they are
	args   []string          // more docker run options
	noWait bool              // return at once: its workers come later
}

// startProxy runs a proxy sharing the stack's volumes and waits for its
// workers.
func (s *stack) startProxy(p proxySpec) {
	s.t.Helper()
	image, confDir, certDir := cmp.Or(p.image, "edgecert-nginx:e2e"), "/etc/nginx/conf.d", "/etc/nginx/certs"
	switch {
	case strings.Contains(image, "apache"):
		confDir, certDir = "/etc/apache2/conf.d", "/etc/apache2/certs"
	case strings.Contains(image, "haproxy"):
		confDir, certDir = "/usr/local/etc/haproxy", "/etc/haproxy/certs"
	}
	if err := os.MkdirAll(filepath.Join(s.dir, p.conf), 0o755); err != nil {
		s.t.Fatal(err)
	}
	args := append([]string{"run", "-d", "--name", p.name, "--network", s.netName(), "--ip", p.ip, "--restart", "always",
		"-v", filepath.Join(s.dir, p.conf) + ":" + confDir + ":ro",
		"-v", filepath.Join(s.dir, "certs") + ":" + certDir + ":ro",
		"-v", filepath.Join(s.dir, "acme") + ":/var/www/acme:ro"}, s.labels()...)
	run := docker
	if onPodman {
		// Podman gives a container a new MAC address at every start; with
		// its fixed IP, edgecert's neighbour cache keeps the old one for
		// up to about 45 s after a restart (README, Podman). Docker derives
		// the MAC from the IP; so does this (with Podman's CLI: the docker
		// CLI asks API 1.44 for it, Podman 4 speaks 1.41).
		args = append(args, "--mac-address", macFor(p.ip))
		run = podman
	}
	for _, k := range slices.Sorted(maps.Keys(p.labels)) {
		args = append(args, "--label", s.prefix+"."+k+"="+p.labels[k])
	}
	for _, k := range slices.Sorted(maps.Keys(p.raw)) {
		args = append(args, "--label", k+"="+p.raw[k])
	}
	args = append(args, p.args...)
	if out, err := run(append(args, image)...); err != nil {
		s.t.Fatalf("start %s: %s", p.name, out)
	}
	if p.noWait {
		return
	}
	pattern := "nginx: worker process"
	if w := p.labels["workers"]; w != "" {
		pattern = w
	}
	if err := waitUntil(20*time.Second, func() error {
		if len(workerPIDs(p.name, pattern)) == 0 {
			return errors.New("no workers yet in " + p.name)
		}
		return nil
	}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) netName() string { return netName }

func (s *stack) startEdgecert(env ...string) {
	s.t.Helper()
	args := []string{"run", "-d", "--name", s.edgecert, "--network", cmp.Or(s.network, s.netName())}
	if !s.noSocket {
		args = append(args, "-v", engineSocket+":/var/run/docker.sock")
	}
	args = append(append(args,
		"-v", filepath.Join(s.dir, "certs")+":/etc/edgecert/certs",
		"-v", filepath.Join(s.dir, "acme")+":/var/www/acme",
		"-v", filepath.Join(s.dir, "state")+":/var/lib/edgecert",
		"-v", pebbleRoot+":/etc/edgecert/pebble-roots.pem:ro",
		"-e", "EDGECERT_ACME_DIRECTORY=https://"+s.pebble+":14000/dir",
		"-e", "EDGECERT_DRY_RUN_DIRECTORY=https://"+s.pebble+":14000/dir",
		"-e", "EDGECERT_ACME_ROOTS=/etc/edgecert/pebble-roots.pem",
		"-e", "EDGECERT_ACME_PROFILE=default",
		"-e", "EDGECERT_ACME_EMAIL=ops@"+s.name+".test",
		"-e", "EDGECERT_LABEL_PREFIX="+s.prefix,
		"-e", "EDGECERT_DEBOUNCE=200ms",
	), s.labels()...)
	for _, e := range env {
		args = append(args, "-e", e)
	}
	if ip, ok := pebbleIPs.Load(s.pebble); ok && onPodman {
		// Podman 4.3's aardvark-dns 1.4 loses names while containers of
		// the network start and stop in parallel (seen here: "lookup
		// pebble ... no such host" for minutes in one run of five): the
		// CA's name is pinned. The suite tests edgecert, not the network's DNS.
		args = append(args, "--add-host", s.pebble+":"+ip.(string))
	}
	args = append(args, s.extraArgs...)
	if len(s.alsoOn) > 0 {
		args = append([]string{"create"}, args[2:]...) // created, connected, then started
	}
	if out, err := docker(append(args, edgecertImage)...); err != nil {
		s.t.Fatalf("start edgecert: %s", out)
	}
	for _, n := range s.alsoOn {
		if out, err := docker("network", "connect", n, s.edgecert); err != nil {
			s.t.Fatalf("connect edgecert to %s: %s", n, out)
		}
	}
	if len(s.alsoOn) > 0 {
		if out, err := docker("start", s.edgecert); err != nil {
			s.t.Fatalf("start edgecert: %s", out)
		}
	}
	if s.unhealthy {
		return
	}
	if err := waitUntil(20*time.Second, func() error {
		out, code := s.cli("health")
		if code != 0 {
			return fmt.Errorf("edgecert health: %s", out)
		}
		return nil
	}); err != nil {
		s.t.Fatal(err)
	}
}

// startApp runs an app container carrying edgecert labels (without the prefix).
func (s *stack) startApp(name string, labels map[string]string) string {
	s.t.Helper()
	cname := s.createApp(name, labels)
	if out, err := docker("start", cname); err != nil {
		s.t.Fatalf("start app %s: %s", name, out)
	}
	return cname
}

// createApp creates (does not start) an app container carrying edgecert labels.
func (s *stack) createApp(name string, labels map[string]string) string {
	s.t.Helper()
	cname := "e2e-" + runID + "-" + s.name + "-" + name
	args := append([]string{"create", "--name", cname, "--network", s.netName()}, s.labels()...)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		args = append(args, "--label", s.prefix+"."+k+"="+labels[k])
	}
	if out, err := docker(append(args, "edgecert-testapp:e2e")...); err != nil {
		s.t.Fatalf("create app %s: %s", name, out)
	}
	return cname
}

// cli runs `docker exec <edgecert> edgecert args...`, as an operator would,
// and returns its combined output and exit code.
func (s *stack) cli(args ...string) (string, int) {
	out, _, code := s.cliSplit(args...)
	return out, code
}

// cliSplit is cli with standard output apart: combined, stdout, exit code.
func (s *stack) cliSplit(args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"exec", s.edgecert, "edgecert"}, args...)...)
	var combined lockedBuffer
	var stdout bytes.Buffer
	cmd.Stdout = io.MultiWriter(&combined, &stdout)
	cmd.Stderr = &combined
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return combined.String(), stdout.String(), code
}

// lockedBuffer is written by exec's stdout and stderr copiers at once.
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

type step struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	TookMS int64  `json:"took_ms"`
	Detail string `json:"detail"`
}

type reload struct {
	At         time.Time `json:"at"`
	Container  string    `json:"container"`
	Certs      []string  `json:"certs"`
	Reloaded   bool      `json:"reloaded"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error"`
	FailedStep string    `json:"failed_step"`
	Steps      []step    `json:"steps"`
}

type certView struct {
	Name       string   `json:"name"`
	Domains    []string `json:"domains"`
	Containers []string `json:"containers"`
	KeyType    string   `json:"key_type"`
	Profile    string   `json:"profile"`
	Challenge  string   `json:"challenge"`
	Issuer     string   `json:"issuer"`
	Failures   int      `json:"failures"`
	Permanent  bool     `json:"permanent_error"`
	Waiting    string   `json:"waiting"`
	Hint       string   `json:"hint"`
	History    []struct {
		At     time.Time `json:"at"`
		Kind   string    `json:"kind"`
		Serial string    `json:"serial"`
		Detail string    `json:"detail"`
		TookMS int64     `json:"took_ms"`
	} `json:"history"`
	State       string    `json:"state"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"not_after"`
	RenewAt     time.Time `json:"renew_at"`
	RenewSource string    `json:"renew_source"`
	NextRetry   time.Time `json:"next_retry"`
	LastError   string    `json:"last_error"`
	DeployError string    `json:"deploy_error"`
	Deployed    bool      `json:"deployed"`
	LastDeploy  time.Time `json:"last_deploy"`
	Held        *struct {
		Serial string `json:"serial"`
		From   string `json:"from"`
	} `json:"held"`
	Reloads []reload `json:"reloads"`
}

type statusDoc struct {
	Certificates []certView `json:"certificates"`
	Problems     []struct {
		Container string `json:"container"`
		Label     string `json:"label"`
		Error     string `json:"error"`
	} `json:"problems"`
	Docker struct {
		Connected  bool `json:"connected"`
		Reconnects int  `json:"reconnects"`
	} `json:"docker"`
}

func (s *stack) status() statusDoc {
	s.t.Helper()
	all, out, code := s.cliSplit("status", "--json")
	// Just (re)started, the container may not run yet, or the daemon not
	// listen yet: that is waited for.
	starting := func() bool {
		return code == 2 && strings.Contains(all, "cannot reach the edgecert daemon") ||
			code != 0 && (strings.Contains(all, "is not running") || strings.Contains(all, "is restarting"))
	}
	for deadline := time.Now().Add(30 * time.Second); starting() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		all, out, code = s.cliSplit("status", "--json")
	}
	var doc statusDoc
	// 1: something needs attention; 2 with a document: edgecert is not
	// following the engine (yet, or any more). The JSON says what.
	err := json.Unmarshal([]byte(out), &doc)
	if code != 0 && code != 1 && (code != 2 || err != nil || doc.Docker.Connected) {
		s.t.Fatalf("status --json: exit %d: %s", code, all)
	}
	if err != nil {
		s.t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return doc
}

func (s *stack) cert(name string) (certView, bool) {
	for _, c := range s.status().Certificates {
		if c.Name == name {
			return c, true
		}
	}
	return certView{}, false
}

// served returns the chain nginx presents for domain.
func (s *stack) served(domain string) ([]*x509.Certificate, error) {
	return servedAt(s.ip, domain)
}

// servedAt returns the chain the server at ip:443 presents for domain.
func servedAt(ip, domain string) ([]*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&netDialer, "tcp", net.JoinHostPort(ip, "443"), &tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

// verified returns the leaf nginx serves for domain if it chains to Pebble's
// current root and names domain; an error otherwise.
func (s *stack) verified(roots *x509.CertPool, domain string) (*x509.Certificate, error) {
	return verifiedAt(s.ip, roots, domain)
}

// verifiedAt is verified for the server at ip.
func verifiedAt(ip string, roots *x509.CertPool, domain string) (*x509.Certificate, error) {
	chain, err := servedAt(ip, domain)
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: domain}); err != nil {
		return nil, fmt.Errorf("serial %s: %w", serialOf(chain[0]), err)
	}
	return chain[0], nil
}

// waitServed waits until nginx serves a certificate for domain that chains
// to roots, and returns its serial.
func (s *stack) waitServed(roots *x509.CertPool, domain string, timeout time.Duration) string {
	s.t.Helper()
	var serial string
	if err := waitUntil(timeout, func() error {
		leaf, err := s.verified(roots, domain)
		if err == nil {
			serial = serialOf(leaf)
		}
		return err
	}); err != nil {
		s.t.Fatalf("%s was never served with a certificate from the CA: %v", domain, err)
	}
	return serial
}

func serialOf(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// workerPIDs lists nginx's live workers, as docker top shows them.
func (s *stack) workerPIDs() []int { return workerPIDs(s.nginx, "nginx: worker process") }

// workerPIDs lists the live worker processes of a container: those whose
// command line contains pattern, other than its main process, and not
// shutting down.
func workerPIDs(container, pattern string) []int {
	main, _ := docker("inspect", "--format", "{{.State.Pid}}", container)
	out, err := docker("top", container)
	pidField := 1 // docker top: UID PID PPID ...
	if onPodman {
		// Podman's compatible top runs ps inside the container, which the
		// test images do not have; its own reads /proc from the host.
		out, err = podman("top", container, "hpid", "args")
		pidField = 0
	}
	if err != nil {
		return nil
	}
	var pids []int
	for _, line := range strings.Split(out, "\n")[1:] {
		if !strings.Contains(line, pattern) || strings.Contains(line, "shutting down") {
			continue
		}
		f := strings.Fields(line)
		if len(f) > pidField && f[pidField] != main {
			if p, err := strconv.Atoi(f[pidField]); err == nil {
				pids = append(pids, p)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// noNewWorkers reports whether no signal reached nginx between two looks at
// its workers: every live worker now was live before, and some are. Workers
// of an earlier reload that finish shutting down in between only leave.
func noNewWorkers(before, now []int) bool {
	return len(now) > 0 && !slices.ContainsFunc(now, func(p int) bool { return !slices.Contains(before, p) })
}

// pebbleStuck is how an order looks when it hits a lock race in Pebble
// v2.10.1 (its order handler read-locks an order twice; a finalization that
// stores the certificate in between blocks both for good): lego's poll of
// the order gets no answer. Let's Encrypt has no such race; edgecert retries
// such an order a minute later, as any failed one.
const pebbleStuck = "timeout awaiting response headers"

// renew runs `edgecert renew args...`. An order lost to Pebble's race is
// retried once, and said in the test log.
func (s *stack) renew(args ...string) (string, int) {
	s.t.Helper()
	out, code := s.cli(append([]string{"renew"}, args...)...)
	if code != 0 && strings.Contains(out, pebbleStuck) {
		s.t.Logf("Pebble lost an order to its lock race; renewing again:\n%s", out)
		out, code = s.cli(append([]string{"renew"}, args...)...)
	}
	return out, code
}

// renewRecovering is renew for a stack with a CA of its own (s.pebble is
// not the shared one): when Pebble's lock race has stopped that CA
// altogether (every request then waits, new orders too), the CA is
// restarted, which edgecert meets as a CA that forgot its account, and the
// renewal is run again. *roots is refreshed: the root changes at every start.
func (s *stack) renewRecovering(roots **x509.CertPool, args ...string) (string, int) {
	s.t.Helper()
	out, code := s.cli(append([]string{"renew"}, args...)...)
	if code == 0 || !strings.Contains(out, pebbleStuck) || s.pebble == "pebble" {
		return out, code
	}
	s.t.Logf("Pebble %s stopped answering (its lock race); restarting it and renewing again:\n%s", s.pebble, out)
	if o, err := docker("restart", "e2e-"+runID+"-"+s.pebble); err != nil {
		s.t.Fatalf("restart %s: %s", s.pebble, o)
	}
	if err := waitPebble(s.pebble); err != nil {
		s.t.Fatal(err)
	}
	*roots = caRoots(s.t, s.pebble)
	return s.cli(append([]string{"renew"}, args...)...)
}

func (s *stack) logs() string {
	out, _ := docker("logs", s.edgecert)
	return out
}

// logValue finds the first line of the edgecert log that matches msg and
// returns the value of key on it.
func logValue(logs, msg, key string) string {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		if m := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=("[^"]*"|\S+)`).FindStringSubmatch(line); m != nil {
			return strings.Trim(m[1], `"`)
		}
	}
	return ""
}

var netDialer = net.Dialer{Timeout: 3 * time.Second}

// exitCode is the exit code of a command that ran, 0 when err is nil.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// newOrders counts the orders a Pebble container has created: what a CA's
// rate limits count. A new-order request the CA refuses creates none (Pebble
// v2.10.1 refuses a `replaces` naming a certificate whose serial's DER
// encoding starts with a zero byte, about one in 256, with a 500 that
// edgecert answers with one plain order), so requests are not counted.
func newOrders(t *testing.T, pebble string) int {
	t.Helper()
	out, err := docker("logs", pebble)
	if err != nil {
		t.Fatal(out)
	}
	return strings.Count(out, "Added order")
}

// issuedAtCA lists the serials of the certificates a Pebble container
// issued, from its log.
func issuedAtCA(pebble string) []string {
	out, _ := docker("logs", pebble)
	var serials []string
	for _, line := range strings.Split(out, "\n") {
		if _, after, ok := strings.Cut(line, "Issued certificate serial "); ok {
			serials = append(serials, strings.Fields(after)[0])
		}
	}
	return serials
}

// failedOrders counts the orders edgecert instances placed that failed
// (their own, not "an order by another host failed"): each one the need
// it was for is ordered again, at its retry.
func failedOrders(hosts []*stack) int {
	n := 0
	for _, h := range hosts {
		for _, line := range strings.Split(h.logs(), "\n") {
			if strings.Contains(line, `msg="order failed; will retry"`) && !strings.Contains(line, `err="an order by `) {
				n++
			}
		}
	}
	return n
}
