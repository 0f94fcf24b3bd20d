package acme

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzValidateName: a name it accepts stays inside the volume and is
// neither hidden nor one of nginx-proxy's flat links.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"example.com", "a", "..", "../x", ".versions", "x.crt", "a/b", "a\x00b", strings.Repeat("a", 101), "UPPER"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		dir := "/certs"
		p := filepath.Join(dir, name)
		if filepath.Dir(p) != dir || filepath.Base(p) != name || strings.HasPrefix(name, ".") || isFlatLink(name) {
			t.Fatalf("name %q accepted but maps to %s", name, p)
		}
	})
}

// FuzzStateDecoding: whatever a state file holds, loading it never panics,
// and a state that loads can be saved and loaded again unchanged.
func FuzzStateDecoding(f *testing.F) {
	f.Add([]byte(`{"fingerprint":"ab","domains":["a.example.com"],"retry_at":"2026-01-01T00:00:00Z","history":[{"at":"2026-01-01T00:00:00Z","kind":"issued"}]}`))
	f.Add([]byte(`{"ari":{"start":"x"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"failures":-1,"history":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stateFile(dir, "x"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := loadState(dir, "x")
		if err != nil {
			return
		}
		if err := saveState(dir, "x", st); err != nil {
			t.Fatal(err)
		}
		again, err := loadState(dir, "x")
		if err != nil {
			t.Fatalf("a saved state does not load: %v", err)
		}
		a, _ := json.Marshal(st)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("state changed across save and load:\n%s\n%s", a, b)
		}
	})
}

// FuzzReadVersion: whatever a version directory holds, reading it never
// panics, and what it accepts is a certificate whose key fits.
func FuzzReadVersion(f *testing.F) {
	ca := newTestCA(f)
	chain, key := ca.issue(f, []string{"a.example.com"}, 90*24*time.Hour)
	f.Add(chain, key)
	f.Add(chain[:len(chain)/2], key)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, chain, key []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, FileFullchain), chain, 0o644)
		os.WriteFile(filepath.Join(dir, FileKey), key, 0o600)
		info, err := readVersion(dir)
		if err != nil {
			return
		}
		if info.Fingerprint == "" || info.Leaf == nil {
			t.Fatalf("accepted a version without a leaf: %+v", info)
		}
	})
}
