package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNoSharedNetwork: edgecert on a network of its own, nginx on another
// (the CA reaches both). Without a handshake to prove a reload, edgecert
// still config-tests, signals and checks the workers; and when nginx has
// started after its certificates were written (a host reboot, a compose
// restart), neither nginx's restart nor edgecert's own sends it a signal:
// it read them when it started.
func TestNoSharedNetwork(t *testing.T) {
	t.Parallel()
	pebble, err := startPebble("pebble-nsn")
	if err != nil {
		t.Fatal(err)
	}
	own := "e2e-" + runID + "-own"
	if out, err := docker("network", "create", "--label", "edgecert-e2e="+runID, own); err != nil {
		t.Fatalf("create network: %s", out)
	}
	t.Cleanup(func() {
		docker("network", "disconnect", "-f", own, pebble)
		docker("network", "rm", own)
	})
	if out, err := docker("network", "connect", "--alias", "pebble-nsn", own, pebble); err != nil {
		t.Fatalf("connect the CA to edgecert's network: %s", out)
	}
	s := newStack(t, "nsn")
	s.pebble, s.network = "pebble-nsn", own
	d := s.domain("www")
	roots := s.up("site", d)
	s.startApp("app", map[string]string{"domains": d, "name": "site"})
	first := s.waitServed(roots, d, 60*time.Second)
	s.waitDeployed("site")
	c, _ := s.cert("site")
	if len(c.Reloads) == 0 || !c.Reloads[0].Reloaded || !hasStep(c.Reloads[0], "handshake", "shares no network") {
		t.Fatalf("reloads = %+v: want a signalled reload whose handshake was skipped (no shared network)", c.Reloads)
	}

	// A reboot, as compose restarts a host's containers: nginx first (it
	// reads the files it finds), then edgecert.
	if out, err := docker("restart", s.nginx); err != nil {
		t.Fatalf("restart nginx: %s", out)
	}
	if err := waitUntil(20*time.Second, func() error {
		if len(s.workerPIDs()) == 0 {
			return errString("no workers yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	workers := s.workerPIDs()
	if out, err := docker("restart", "-t", "10", s.edgecert); err != nil {
		t.Fatalf("restart edgecert: %s", out)
	}
	restarted := startedAt(t, s.edgecert)
	s.waitDeployed("site")
	logs, _ := docker("logs", "--since", restarted.Format(time.RFC3339Nano), s.edgecert)
	if n := signalsIn(logs); n != 0 || !slices.Equal(workers, s.workerPIDs()) {
		t.Errorf("after the restarts: %d signals, workers %v -> %v; want none: nginx read the files when it started", n, workers, s.workerPIDs())
	}
	if c, _ := s.cert("site"); len(c.Reloads) == 0 || c.Reloads[0].Reloaded || !hasStep(c.Reloads[0], "check", "it read them then") {
		t.Errorf("reloads after the restarts = %+v: want a check by start time, no signal", c.Reloads)
	}
	if leaf, err := s.verified(roots, d); err != nil || serialOf(leaf) != first {
		t.Errorf("after the restarts %s serves %v, %v; want serial %s", d, leaf, err, first)
	}

	// A renewal is newer than nginx's start: it is signalled.
	if out, code := s.renewRecovering(&roots, "--force", "site"); code != 0 {
		t.Fatalf("renew --force: exit %d:\n%s", code, out)
	}
	if leaf, err := s.verified(roots, d); err != nil || serialOf(leaf) == first {
		t.Errorf("after the renewal %s serves %v, %v; want a new certificate", d, leaf, err)
	}
	if logs := s.logs(); !strings.Contains(logs, "reload proven") || signalsIn(logs) < 2 {
		t.Errorf("the renewal was not signalled: %d signalled reloads in all", signalsIn(logs))
	}
}
