package acme

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log that the test reads while the Manager writes it.
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

// At a start the volume is read while the engine lists the containers:
// before the first set of wants comes, not after it; what was read is what
// the wants then find, with nothing ordered.
func TestTheVolumeIsReadBeforeTheWantsCome(t *testing.T) {
	certs, st := t.TempDir(), t.TempDir()
	store, err := NewStore(certs, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	var wants []Want
	for _, name := range []string{"a", "b", "c"} {
		d := name + ".example.com"
		chain, key := ca.issue(t, []string{d}, 90*24*time.Hour)
		if _, err := store.Write(name, chain, key, false); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, Want{Name: name, Domains: []string{d}, Containers: []string{name}})
	}
	logs := &lockedBuffer{}
	iss := &fakeIssuer{t: t, ca: ca, life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{}
	h := launchWith(t, certs, st, iss, dep, nil, func(c *ManagerConfig) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	waitFor(t, "the volume read without any wants", func() bool {
		return strings.Contains(logs.String(), `msg="certificate volume read" certs=3`)
	})
	h.m.Update(wants)
	waitFor(t, "the three deployed", func() bool { return allDeployed(h.m.Status()) && len(h.m.Status()) == 3 })
	if n := iss.count(); n != 0 {
		t.Errorf("%d orders for certificates on the volume, want none", n)
	}
}
