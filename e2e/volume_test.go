package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pebbleSaw counts the lines of the shared Pebble's log that name domain:
// 0 means no order for it reached the CA.
func pebbleSaw(domain string) int {
	out, _ := docker("logs", "e2e-"+runID+"-pebble")
	return strings.Count(out, domain)
}

// TestDirectoryInTheWay: a real directory sits where a certificate's link
// goes (certbot's or acme-companion's layout left on the volume). No order
// reaches the CA while it is there, status names it, and once it is moved
// away the certificate appears with exactly one order.
func TestDirectoryInTheWay(t *testing.T) {
	t.Parallel()
	s := newStack(t, "dirway")
	d := s.domain("site")
	leftover := filepath.Join(s.dir, "certs", "site")
	if err := os.MkdirAll(leftover, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leftover, "cert.pem"), []byte("left by another tool\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := s.up("site", d)
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	if err := waitUntil(60*time.Second, func() error {
		c, _ := s.cert("site")
		if c.State != "failing" || !strings.Contains(c.LastError, "not a link made by edgecert") || !strings.Contains(c.LastError, "no order placed") {
			return fmt.Errorf("status %s %q", c.State, c.LastError)
		}
		return nil
	}); err != nil {
		t.Fatalf("status does not name the directory in the way: %v", err)
	}
	if n := pebbleSaw(d); n != 0 {
		t.Fatalf("the CA saw %s %d times while the directory was in the way", d, n)
	}
	if data, err := os.ReadFile(filepath.Join(leftover, "cert.pem")); err != nil || string(data) != "left by another tool\n" {
		t.Fatalf("the leftover directory was touched: %q, %v", data, err)
	}

	if err := os.RemoveAll(leftover); err != nil {
		t.Fatal(err)
	}
	if out, code := s.renew("site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew after moving the directory away: exit %d:\n%s", code, out)
	}
	if _, err := s.verified(roots, d); err != nil {
		t.Fatalf("not served after the directory left: %v", err)
	}
	if n := strings.Count(s.logs(), "certificate obtained and written"); n != 1 {
		t.Fatalf("%d certificates obtained, want exactly 1", n)
	}
}

// TestFullVolume: the certificate volume is a small tmpfs that fills up.
// A renewal then places no order and says why, the current certificate is
// served throughout; once space is freed, one order renews it.
func TestFullVolume(t *testing.T) {
	t.Parallel()
	s := newStack(t, "full")
	certs := filepath.Join(s.dir, "certs")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", certs).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the certificate volume (the e2e suite runs as root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", certs).Run() })
	d := s.domain("site")
	roots := s.up("site", d)
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	first := s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")

	filler := filepath.Join(certs, "filler")
	fillUp(t, filler)
	out, code := s.renew("--force", "site")
	if code != 1 || !strings.Contains(out, "no order placed") || !strings.Contains(out, "no space left") {
		t.Fatalf("renew --force on a full volume: exit %d:\n%s\nwant a refusal before any order, naming the cause", code, out)
	}
	if leaf, err := s.verified(roots, d); err != nil || serialOf(leaf) != first {
		t.Fatalf("on a full volume nginx serves %v, %v; want the current serial %s", leaf, err, first)
	}
	if c, _ := s.cert("site"); c.Serial != first || !strings.Contains(c.LastError, "no space left") {
		t.Fatalf("status on a full volume: serial %s, last error %q", c.Serial, c.LastError)
	}
	if n := strings.Count(s.logs(), "certificate obtained and written"); n != 1 {
		t.Fatalf("%d certificates obtained, want 1 (none while full)", n)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if out, code := s.renew("--force", "site"); code != 0 || !strings.Contains(out, "proven") {
		t.Fatalf("renew --force after freeing space: exit %d:\n%s", code, out)
	}
	if leaf, err := s.verified(roots, d); err != nil || serialOf(leaf) == first {
		t.Fatalf("after freeing space nginx serves %v, %v; want a new certificate", leaf, err)
	}
	if n := strings.Count(s.logs(), "certificate obtained and written"); n != 2 {
		t.Fatalf("%d certificates obtained, want 2", n)
	}
}

// fillUp writes path until the file system is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the volume: %v", err)
			}
			return
		}
	}
}
