package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUnservedNameHoldsNothingUp: an app labelled for a name nginx has no
// server block for (as every site is while it is being set up), with
// default settings. Its certificate is issued once and status says, with a
// hint naming nginx, the name and what nginx presented, that nginx does not
// serve it; a forced renewal of another certificate on the same nginx is
// proven as fast as without it (no 30 s handshake wait, no rest after it);
// two forced renewals in quick succession never wait for an older serial;
// once the test adds the server block and reloads nginx itself, `renew
// NAME` proves the certificate without ordering it again.
func TestUnservedNameHoldsNothingUp(t *testing.T) {
	t.Parallel()
	s := newStack(t, "unserved")
	site, bare := s.domain("site"), s.domain("bare")
	s.point(site, bare)
	s.startNginx()
	s.startEdgecert()
	roots := caRoots(t, s.pebble)
	s.writeConf("10-site.conf", tlsServer("site", site))
	s.startApp("site", map[string]string{"domains": site, "name": "site"})
	s.waitServed(roots, site, 150*time.Second)
	s.waitDeployed("site")
	s.startApp("bare", map[string]string{"domains": bare, "name": "bare"})

	var c certView
	if err := waitUntil(150*time.Second, func() error {
		c, _ = s.cert("bare")
		if c.Hint == "" {
			return fmt.Errorf("no hint yet: %+v", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Hint, s.nginx+" has no server for "+bare) || !strings.Contains(c.Hint, "it presented a certificate for") ||
		c.State != "valid" || c.DeployError != "" || c.Deployed {
		t.Errorf("bare: hint %q, state %s, deploy error %q, deployed %v; want a hint naming nginx, the name and what it presented, and no failure",
			c.Hint, c.State, c.DeployError, c.Deployed)
	}
	if text, _ := s.cli("status", "bare"); !strings.Contains(text, "has no server for "+bare) {
		t.Errorf("status bare (text) does not show the hint:\n%s", text)
	}

	// A forced renewal of site on the same nginx: proven as soon as it is
	// written, the unserved name beside it or not.
	for i := range 2 {
		start := time.Now()
		out, code := s.renew("--force", "site")
		took := time.Since(start)
		sc, _ := s.cert("site")
		proof := writtenToProven(sc)
		t.Logf("MEASURE unserved-beside renew=%d command=%s written_to_proven=%s", i+1, took.Round(time.Millisecond), proof.Round(time.Millisecond))
		if code != 0 || !strings.Contains(out, "proven") {
			t.Fatalf("renew --force site: exit %d:\n%s", code, out)
		}
	}
	// Before, the unserved name's handshake ran to the reload timeout and
	// the proxy then rested as long; what shows it is in the log, not in a
	// time measured on a loaded machine. (A machine loaded enough to make
	// nginx itself slow may make it rest: that is the rule working.)
	if logs := s.logs(); strings.Contains(logs, "timed out after") {
		t.Errorf("a proof waited for its timeout with a name nginx does not serve beside:\n%s", logs)
	} else if err := restsOnlyAfterSlowLoads(logs); err != nil {
		t.Errorf("%v:\n%s", err, logs)
	}

	// Two forced renewals in quick succession: the second starts as soon
	// as the first's certificate is on the volume; each is proven, the
	// first by the second's serial if that one is served by then.
	before, _ := s.cert("site")
	var wg sync.WaitGroup
	outs := make([]string, 2)
	codes := make([]int, 2)
	took := make([]time.Duration, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		outs[0], codes[0] = s.renew("--force", "site")
		took[0] = time.Since(start)
	}()
	if err := waitUntil(60*time.Second, func() error {
		if c, _ := s.cert("site"); c.Serial == before.Serial {
			return fmt.Errorf("not written yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	outs[1], codes[1] = s.renew("--force", "site")
	took[1] = time.Since(start)
	wg.Wait()
	for i := range 2 {
		t.Logf("MEASURE quick-succession renew=%d took=%s exit=%d", i+1, took[i].Round(time.Millisecond), codes[i])
		if codes[i] != 0 || !strings.Contains(outs[i], "proven") {
			t.Errorf("renewal %d in quick succession: exit %d after %s:\n%s", i+1, codes[i], took[i], outs[i])
		}
	}
	// The first's proof never waited for its overtaken serial.
	if logs := s.logs(); strings.Contains(logs, "timed out after") || strings.Contains(logs, `msg="deployment failed; will retry" cert=site`) {
		t.Errorf("a proof in quick succession waited for its timeout or failed:\n%s", logs)
	}

	if n := strings.Count(s.logs(), `msg="ordering certificate" cert=bare `); n != 1 {
		t.Errorf("bare was ordered %d times, want once: a name nginx does not serve is no reason to order", n)
	}

	// The server block comes; the operator reloads nginx.
	s.writeConf("11-bare.conf", tlsServer("bare", bare))
	if out, err := docker("kill", "-s", "HUP", s.nginx); err != nil {
		t.Fatalf("reload nginx: %s", out)
	}
	// `renew bare` proves it; or, if a reload of this nginx (the last of
	// site's, say) has proven it meanwhile, says it is not due, and status
	// shows it deployed.
	if err := waitUntil(60*time.Second, func() error {
		out, code := s.renew("bare")
		if c, _ := s.cert("bare"); code != 0 || !strings.Contains(out, "proven") && !(c.Deployed && c.Hint == "" && strings.Contains(out, "not due")) {
			return fmt.Errorf("renew bare: exit %d: %s", code, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.waitServed(roots, bare, 30*time.Second)
	if c, _ := s.cert("bare"); !c.Deployed || c.Hint != "" {
		t.Errorf("bare after its server block: deployed %v, hint %q; want deployed, no hint", c.Deployed, c.Hint)
	}
	if n := strings.Count(s.logs(), `msg="ordering certificate" cert=bare `); n != 1 {
		t.Errorf("bare was ordered %d times, want once", n)
	}
}

// writtenToProven is how long the newest certificate of c took from its
// issue (written) to its proof, from its history; -1 if unknown.
func writtenToProven(c certView) time.Duration {
	for i := len(c.History) - 1; i >= 0; i-- {
		if c.History[i].Kind != "reload_proven" {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if c.History[j].Kind == "issued" {
				return c.History[i].At.Sub(c.History[j].At)
			}
		}
	}
	return -1
}

// slowLoad is README's "slow" reload (section Reloads): its config test,
// signal and new workers' start took 5 s or more.
const slowLoad = 5 * time.Second

var loadStep = regexp.MustCompile(`\b(config_test|signal|workers_new)=(\d+)ms`)

// restsOnlyAfterSlowLoads checks an edgecert log: a proxy rests only after
// a reload whose loading (not its proof's handshakes) was slow.
func restsOnlyAfterSlowLoads(logs string) error {
	last := map[string]time.Duration{} // container: the load time of its last reload
	for _, line := range strings.Split(logs, "\n") {
		name := logValue(line, "", "container")
		switch {
		case strings.Contains(line, "steps="):
			var took time.Duration
			for _, m := range loadStep.FindAllStringSubmatch(logValue(line, "", "steps"), -1) {
				ms, _ := strconv.Atoi(m[2])
				took += time.Duration(ms) * time.Millisecond
			}
			last[name] = took
		case strings.Contains(line, "proxy rests before its next reload"):
			if last[name] < slowLoad {
				return fmt.Errorf("%s rested after a reload that loaded in %s (rests follow loads of %s or more): %s", name, last[name], slowLoad, line)
			}
		}
	}
	return nil
}
