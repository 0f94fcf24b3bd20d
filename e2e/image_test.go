package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnprivilegedEdgecert: the image runs as uid 65532 with the Docker
// socket's group (README's unprivileged set-up): it watches, orders, writes
// (keys 0600, owned by that user) and proves the reload as root would, and
// the CLI works through docker exec as that user.
func TestUnprivilegedEdgecert(t *testing.T) {
	t.Parallel()
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/docker.sock", &st); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "nonroot")
	for _, dir := range []string{"certs", "acme", "state"} { // as named volumes would be, from the image
		if err := os.Chown(filepath.Join(s.dir, dir), 65532, 65532); err != nil {
			t.Fatal(err)
		}
	}
	s.extraArgs = append(s.extraArgs, "--user", "65532:"+strconv.Itoa(int(st.Gid)))
	d := s.domain("site")
	roots := s.up("site", d)
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	s.waitServed(roots, d, 150*time.Second)
	s.waitDeployed("site")
	if out, err := docker("exec", s.edgecert, "edgecert", "status", "site"); err != nil || !strings.Contains(out, "valid") {
		t.Errorf("status as uid 65532: %v\n%s", err, out)
	}
	key := filepath.Join(s.dir, "certs", "site", "privkey.pem")
	var ks syscall.Stat_t
	if err := syscall.Stat(key, &ks); err != nil || ks.Uid != 65532 || ks.Mode&0o777 != 0o600 {
		t.Errorf("%s: uid %d mode %o, %v; want 65532 and 0600", key, ks.Uid, ks.Mode&0o777, err)
	}
	if out, _ := docker("top", s.edgecert, "-o", "pid,uid,comm"); !strings.Contains(out, "65532") {
		t.Errorf("edgecert does not run as uid 65532:\n%s", out)
	}
}
