package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrashCampaign kills edgecert with SIGKILL at random moments while
// forced renewals of three certificates run back to back, over and over,
// and restarts it. After every restart: every pair on the volume fits, no
// certificate is lost, nginx serves certificates that verify, no leftover
// of an interrupted write survives the start. At the end: every certificate
// is proven served, and the CA received no more new orders than renewals
// were asked for (a kill never makes edgecert order a valid certificate
// again). `make test` kills 30 times; `make soak` 200 times
// (EDGECERT_E2E_CRASH_KILLS).
func TestCrashCampaign(t *testing.T) {
	t.Parallel()
	kills := 30
	if v, err := strconv.Atoi(os.Getenv("EDGECERT_E2E_CRASH_KILLS")); err == nil && v > 0 {
		kills = v
	}
	if _, err := startPebble("pebble-crash"); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "crash")
	s.pebble = "pebble-crash"
	names := []string{"c0", "c1", "c2"}
	var domains []string
	for _, n := range names {
		domains = append(domains, s.domain(n))
	}
	s.point(domains...)
	s.startNginx()
	s.startEdgecert("EDGECERT_RELOAD_DEBOUNCE=300ms", "EDGECERT_FORCED_RENEWALS=0") // forced renewals without bound
	roots := caRoots(t, s.pebble)
	for i, n := range names {
		s.writeConf("10-"+n+".conf", tlsServer(n, domains[i]))
		s.startApp("app-"+n, map[string]string{"domains": domains[i], "name": n})
	}
	for _, d := range domains {
		s.waitServed(roots, d, 150*time.Second)
	}
	s.waitDeployed(names...)
	base := newOrders(t, "e2e-"+runID+"-"+s.pebble)
	certs := filepath.Join(s.dir, "certs")

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("crash campaign: %d kills, seed %d", kills, seed)
	asked, mismatched, lost, leftovers, unverified, disagreed := 0, 0, 0, 0, 0, 0
	for i := range kills {
		renew := exec.Command("docker", "exec", s.edgecert, "edgecert", "renew", "--force", "c0", "c1", "c2")
		if err := renew.Start(); err != nil {
			t.Fatal(err)
		}
		asked += len(names)
		time.Sleep(time.Duration(rng.Int64N(int64(6 * time.Second))))
		// Most rounds SIGKILL; every fifth a `docker stop` (SIGTERM, then
		// SIGKILL after 10 s): an order past the CA is kept, or cleanly not placed.
		stop := []string{"kill", "-s", "KILL", s.edgecert}
		if i%5 == 4 {
			stop = []string{"stop", s.edgecert}
		}
		if out, err := docker(stop...); err != nil {
			t.Fatalf("%s %d: %s", stop[0], i, out)
		}
		_ = renew.Wait()
		restarted := time.Now()
		if out, err := docker("start", s.edgecert); err != nil {
			t.Fatalf("start after kill %d: %s", i, out)
		}
		if err := waitUntil(60*time.Second, func() error {
			if out, code := s.cli("health"); code != 0 {
				return errString(out)
			}
			return nil
		}); err != nil {
			t.Fatalf("not healthy after kill %d: %v", i, err)
		}
		for _, n := range names {
			switch err := pairFits(filepath.Join(certs, n)); {
			case os.IsNotExist(err):
				lost++
				t.Errorf("kill %d: certificate %s lost: %v", i, n, err)
			case err != nil:
				mismatched++
				t.Errorf("kill %d: certificate %s: %v", i, n, err)
			}
		}
		if old := tmpOlderThan(certs, restarted); len(old) > 0 {
			leftovers += len(old)
			t.Errorf("kill %d: leftovers of an interrupted write survived the start: %v", i, old)
		}
		// State and volume agree: status names the certificate the volume holds.
		if err := waitUntil(30*time.Second, func() error {
			for _, n := range names {
				c, _ := s.cert(n)
				if want := volumeSerial(filepath.Join(certs, n)); c.Serial != want {
					return fmt.Errorf("%s: status says serial %s, the volume holds %s", n, c.Serial, want)
				}
			}
			return nil
		}); err != nil {
			disagreed++
			t.Errorf("kill %d: %v", i, err)
		}
		for _, d := range domains {
			if _, err := s.verified(roots, d); err != nil {
				unverified++
				t.Errorf("kill %d: nginx serves %s with a certificate that does not verify: %v", i, d, err)
			}
		}
	}
	// Settled: every certificate current, proven served, and consistent
	// with the status edgecert gives.
	s.waitDeployed(names...)
	for i, n := range names {
		leaf, err := s.verified(roots, domains[i])
		c, _ := s.cert(n)
		if err != nil || serialOf(leaf) != c.Serial || c.State != "valid" {
			t.Errorf("%s at the end: serves %v (%v), status %s serial %s", n, leaf, err, c.State, c.Serial)
		}
	}
	orders := newOrders(t, "e2e-"+runID+"-"+s.pebble) - base
	issued := strings.Count(s.logs(), "certificate obtained and written") // every run of the container
	t.Logf("MEASURE crash_campaign kills=%d renewals_asked=%d orders_at_ca=%d issued_and_written=%d mismatched_pairs=%d lost=%d leftovers=%d unverified=%d state_volume_disagreed=%d seed=%d",
		kills, asked, orders, issued, mismatched, lost, leftovers, unverified, disagreed, seed)
	if orders > asked {
		t.Errorf("%d new orders at the CA for %d renewals asked: a kill made edgecert order again", orders, asked)
	}
	if orders == 0 {
		t.Errorf("no order reached the CA in %d rounds: the campaign tested nothing", kills)
	}
}

// pairFits checks the current pair under link: both files readable, the
// key fits the certificate, and it is not a placeholder (the certificates
// of the campaign were all real before it started).
func pairFits(link string) error {
	chain, err := os.ReadFile(filepath.Join(link, "fullchain.pem"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(link, "privkey.pem"))
	if err != nil {
		return err
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return fmt.Errorf("mismatched or unreadable pair: %w", err)
	}
	b, _ := pem.Decode(chain)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return err
	}
	for _, o := range leaf.Subject.Organization {
		if o == "edgecert placeholder" {
			return fmt.Errorf("a placeholder replaced the certificate: %w", os.ErrNotExist)
		}
	}
	return nil
}

// tmpOlderThan lists the temporary version directories and links on the
// certificate volume that were made before t.
func tmpOlderThan(certs string, t time.Time) []string {
	var old []string
	dirs, _ := filepath.Glob(filepath.Join(certs, ".versions", "*", ".tmp-*"))
	links, _ := filepath.Glob(filepath.Join(certs, ".*.link-tmp"))
	for _, p := range append(dirs, links...) {
		if fi, err := os.Lstat(p); err == nil && fi.ModTime().Before(t) {
			old = append(old, p)
		}
	}
	return old
}

// volumeSerial is the serial of the certificate current under link, "" if none.
func volumeSerial(link string) string {
	chain, err := os.ReadFile(filepath.Join(link, "fullchain.pem"))
	if err != nil {
		return ""
	}
	b, _ := pem.Decode(chain)
	if b == nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return ""
	}
	return serialOf(leaf)
}
