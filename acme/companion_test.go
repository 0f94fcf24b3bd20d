package acme

import (
	"crypto/elliptic"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// An acme-companion volume: each valid certificate becomes current under
// its directory's name with an "imported" history, and a Manager then orders
// nothing for it, though its key type is not edgecert's default.
func TestImportCompanion(t *testing.T) {
	ca := newTestCA(t)
	old := t.TempDir()
	put := func(dir string, chain, key []byte) {
		t.Helper()
		p := filepath.Join(old, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"fullchain.pem": chain, "key.pem": key, ".companion": nil} {
			if err := os.WriteFile(filepath.Join(p, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	chain, key := ca.issueCurve(t, []string{"a.example.com", "www.a.example.com"}, 60*24*time.Hour, elliptic.P384())
	put("a.example.com", chain, key)
	if err := os.Symlink("./a.example.com/fullchain.pem", filepath.Join(old, "a.example.com.crt")); err != nil {
		t.Fatal(err)
	}
	c2, k2 := ca.issue(t, []string{"staging.example.com"}, 60*24*time.Hour)
	put("_test_staging.example.com", c2, k2)
	c3, _ := ca.issue(t, []string{"old.example.com"}, time.Hour)
	_, k3 := ca.issue(t, []string{"old.example.com"}, time.Hour)
	put("mismatch.example.com", c3, k3)
	c4, k4 := ca.issue(t, []string{"gone.example.com"}, time.Hour)
	put("gone.example.com", c4, k4)

	certs, st := t.TempDir(), t.TempDir()
	store, err := NewStore(certs, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := ImportCompanion(old, false, store, st, time.Now().Add(2*time.Hour), log)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res {
		got[r.Name] = r.Skip
	}
	if len(got) != 3 || got["a.example.com"] != "" || got["mismatch.example.com"] == "" || got["gone.example.com"] == "" {
		t.Fatalf("import results = %v; want a imported, the mismatched and the expired skipped, staging left alone", got)
	}
	if again, _ := ImportCompanion(old, false, store, st, time.Now(), log); again[0].Skip == "" {
		t.Errorf("a second import replaced what edgecert has: %+v", again[0])
	}

	iss := &fakeIssuer{t: t, ca: ca, life: 90 * 24 * time.Hour}
	dep := &fakeDeployer{}
	h := start(t, certs, st, iss, dep)
	h.m.Update([]Want{{Name: "a.example.com", Domains: []string{"a.example.com", "www.a.example.com"}, Containers: []string{"app"}}})
	waitFor(t, "proven", func() bool { return state(h.m, "a.example.com").Deployed })
	s := state(h.m, "a.example.com")
	if iss.count() != 0 || s.State != StateValid || s.KeyType != "ec256" || len(s.History) == 0 || s.History[0].Kind != EventImported {
		t.Errorf("after import: orders %d, %+v; want none, valid, imported history", iss.count(), s)
	}
}
