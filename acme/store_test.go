package acme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA signs leaf certificates the way a CA would, for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
	now  func() time.Time
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(3650 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: k, n: 100, now: time.Now}
}

// issue returns a chain (leaf, intermediate) and P-256 key for domains, valid for life.
func (ca *testCA) issue(t testing.TB, domains []string, life time.Duration) (chain, key []byte) {
	return ca.issueCurve(t, domains, life, elliptic.P256())
}

func (ca *testCA) issueCurve(t testing.TB, domains []string, life time.Duration, curve elliptic.Curve) (chain, key []byte) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(curve, rand.Reader)
	ca.n++
	now := ca.now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.n), Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains,
		NotBefore: now, NotAfter: now.Add(life), AuthorityKeyId: ca.cert.SubjectKeyId}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	chain = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestStoreWriteIsAPairBehindOneRelativeLink(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	chain, key := ca.issue(t, []string{"example.com", "www.example.com"}, 90*24*time.Hour)
	info, err := s.Write("example.com", chain, key, false)
	if err != nil {
		t.Fatal(err)
	}

	target, err := os.Readlink(filepath.Join(dir, "example.com"))
	if err != nil || filepath.IsAbs(target) || !strings.HasPrefix(target, ".versions/") {
		t.Fatalf("link target = %q, %v; want a relative path into .versions", target, err)
	}
	// The volume mounted elsewhere (as nginx does) still resolves.
	moved := filepath.Join(t.TempDir(), "certs")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(moved, "example.com", FileFullchain), filepath.Join(moved, "example.com", FileKey))
	if err != nil {
		t.Fatalf("pair at the moved mount: %v", err)
	}
	if len(pair.Certificate) != 2 {
		t.Errorf("fullchain holds %d certificates, want leaf + intermediate", len(pair.Certificate))
	}
	fi, err := os.Stat(filepath.Join(moved, "example.com", FileKey))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	for _, f := range []string{FileCert, FileChain} {
		data, err := os.ReadFile(filepath.Join(moved, "example.com", f))
		if err != nil || strings.Count(string(data), "BEGIN CERTIFICATE") != 1 {
			t.Errorf("%s: want exactly one certificate, got %q, %v", f, data, err)
		}
	}

	s2, _ := NewStore(moved, DefaultOwner)
	got, err := s2.Read("example.com")
	if err != nil || got.Fingerprint != info.Fingerprint || got.Placeholder || len(got.Domains) != 2 {
		t.Fatalf("Read = %+v, %v; want the written certificate %+v", got, err, info)
	}
}

func TestStoreRefusesMismatchedPairAndKeepsCurrent(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, DefaultOwner)
	ca := newTestCA(t)
	chain1, key1 := ca.issue(t, []string{"a.example.com"}, time.Hour)
	first, err := s.Write("a", chain1, key1, false)
	if err != nil {
		t.Fatal(err)
	}
	chain2, _ := ca.issue(t, []string{"a.example.com"}, time.Hour)
	if _, err := s.Write("a", chain2, key1, false); err == nil || !strings.Contains(err.Error(), "mismatched") {
		t.Fatalf("Write(mismatched) = %v, want a refusal", err)
	}
	got, err := s.Read("a")
	if err != nil || got.Fingerprint != first.Fingerprint {
		t.Fatalf("after refused write: %+v, %v; want the first certificate still current", got, err)
	}
}

func TestStorePrunesOldVersionsAndPlaceholder(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, DefaultOwner)
	info, err := s.WritePlaceholder("p", []string{"p.example.com"}, false)
	if err != nil || !info.Placeholder {
		t.Fatalf("placeholder = %+v, %v", info, err)
	}
	ca := newTestCA(t)
	for range 6 {
		chain, key := ca.issue(t, []string{"p.example.com"}, time.Hour)
		if _, err := s.Write("p", chain, key, false); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, versionsDir, "p"))
	if len(ents) != keepVersions+1 {
		t.Errorf("%d versions kept, want %d (current + %d)", len(ents), keepVersions+1, keepVersions)
	}
	if names, _ := s.Names(); len(names) != 1 || names[0] != "p" {
		t.Errorf("Names = %v, want [p]", names)
	}
}

func TestStoreDoesNotReplaceAForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, DefaultOwner)
	if err := os.MkdirAll(filepath.Join(dir, "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "mine", "keep.txt"), []byte("x"), 0o644)
	if _, err := s.WritePlaceholder("mine", []string{"mine.example.com"}, false); err == nil {
		t.Fatal("WritePlaceholder over a real directory succeeded; want an error")
	}
	if _, err := os.Stat(filepath.Join(dir, "mine", "keep.txt")); err != nil {
		t.Fatalf("the foreign directory's file is gone: %v", err)
	}
}

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		desc string
		life time.Duration
		want time.Duration
	}{
		{desc: "90 days: a third left", life: 90 * 24 * time.Hour, want: 60 * 24 * time.Hour},
		{desc: "45 days: a third left", life: 45 * 24 * time.Hour, want: 30 * 24 * time.Hour},
		{desc: "6 days: half left", life: 6 * 24 * time.Hour, want: 3 * 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := RenewAt(t0, t0.Add(tc.life)); !got.Equal(t0.Add(tc.want)) {
				t.Errorf("RenewAt = %v, want %v", got, t0.Add(tc.want))
			}
		})
	}
}

func TestStoreFlatLinksFollowNewVersions(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, DefaultOwner)
	ca := newTestCA(t)
	c1, k1 := ca.issue(t, []string{"a.example.com"}, time.Hour)
	if _, err := s.Write("a", c1, k1, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFlatLinks("a", []string{"a.example.com"}); err != nil {
		t.Fatal(err)
	}
	c2, k2 := ca.issue(t, []string{"a.example.com"}, time.Hour)
	second, err := s.Write("a", c2, k2, false)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "a.example.com.crt"), filepath.Join(dir, "a.example.com.key"))
	if err != nil {
		t.Fatalf("flat pair: %v", err)
	}
	if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); infoOf(leaf).Fingerprint != second.Fingerprint {
		t.Errorf("the flat links do not follow the new version")
	}
	if target, _ := os.Readlink(filepath.Join(dir, "a.example.com.chain.pem")); target != "a/chain.pem" {
		t.Errorf("chain link -> %q, want a/chain.pem (relative)", target)
	}
	if names, _ := s.Names(); len(names) != 1 {
		t.Errorf("Names = %v: flat links counted as certificates", names)
	}
}

func TestStoreKeyOwner(t *testing.T) {
	uid, gid := 4242, 4343 // as root (CI): any owner
	if os.Geteuid() != 0 {
		uid, gid = os.Getuid(), os.Getgid()
	}
	ca := newTestCA(t)
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	chain, key := ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("a", chain, key, false); err != nil { // before the owner is set
		t.Fatal(err)
	}
	owner := func(p string) (int, int, os.FileMode) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid), fi.Mode().Perm()
	}
	s, err = NewStore(dir, KeyOwner{UID: uid, GID: gid})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.FixKeyOwners(); err != nil || (n != 1 && os.Geteuid() == 0) {
		t.Fatalf("FixKeyOwners = %d, %v; want the one existing key changed", n, err)
	}
	if u, g, m := owner(filepath.Join(dir, "a", FileKey)); u != uid || g != gid || m != 0o600 {
		t.Errorf("existing key: %d:%d %o, want %d:%d 0600", u, g, m, uid, gid)
	}
	if n, _ := s.FixKeyOwners(); n != 0 {
		t.Errorf("FixKeyOwners again changed %d keys, want 0", n)
	}
	chain, key = ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("a", chain, key, false); err != nil {
		t.Fatal(err)
	}
	if u, g, m := owner(filepath.Join(dir, "a", FileKey)); u != uid || g != gid || m != 0o600 {
		t.Errorf("new key: %d:%d %o, want %d:%d 0600", u, g, m, uid, gid)
	}
	if u, _, m := owner(filepath.Join(dir, "a", FileFullchain)); u != os.Geteuid() || m != 0o644 {
		t.Errorf("fullchain: owner %d mode %o, want edgecert's own and 0644", u, m)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"example.com", "my-site_1", "a"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "a/b", ".hidden", "UPPER", "a..b", "site.crt", "x.key", "y.chain.pem", strings.Repeat("a", 101), "-x"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", bad)
		}
	}
}

func TestStoreRecoversTheNewestUsableVersion(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		desc   string
		damage func(t *testing.T, cur string)
	}{
		{desc: "truncated fullchain", damage: func(t *testing.T, cur string) {
			if err := os.Truncate(filepath.Join(cur, FileFullchain), 100); err != nil {
				t.Fatal(err)
			}
		}},
		{desc: "key that does not fit", damage: func(t *testing.T, cur string) {
			_, other := ca.issue(t, []string{"x.example.com"}, time.Hour)
			if err := os.WriteFile(filepath.Join(cur, FileKey), other, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{desc: "link to a version that is gone", damage: func(t *testing.T, cur string) {
			if err := os.RemoveAll(cur); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := NewStore(dir, DefaultOwner)
			c1, k1 := ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
			first, err := s.Write("a", c1, k1, false)
			if err != nil {
				t.Fatal(err)
			}
			c2, k2 := ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
			second, err := s.Write("a", c2, k2, false)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, filepath.Join(dir, versionsDir, "a", second.Version))
			if _, err := s.Read("a"); err == nil {
				t.Fatal("Read accepted the damaged version")
			}
			got, err := s.Recover("a")
			if err != nil || got.Fingerprint != first.Fingerprint {
				t.Fatalf("Recover = %+v, %v; want the first version back", got, err)
			}
			if again, err := s.Read("a"); err != nil || again.Fingerprint != first.Fingerprint {
				t.Fatalf("Read after Recover = %+v, %v", again, err)
			}
		})
	}
	t.Run("nothing usable", func(t *testing.T) {
		s, _ := NewStore(t.TempDir(), DefaultOwner)
		if _, err := s.Recover("none"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Recover of nothing = %v, want fs.ErrNotExist", err)
		}
	})
}

func TestStoreCleansLeftoversAndRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, DefaultOwner)
	ca := newTestCA(t)
	c, k := ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("a", c, k, false); err != nil {
		t.Fatal(err)
	}
	// What a crash in the middle of a write leaves behind.
	tmp := filepath.Join(dir, versionsDir, "a", ".tmp-123")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, FileKey), k, 0o600)
	os.Symlink("x", filepath.Join(dir, ".a.link-tmp"))
	if n, err := s.Clean(); err != nil || n != 2 {
		t.Fatalf("Clean = %d, %v; want the two leftovers removed", n, err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s survived Clean", tmp)
	}
	if _, err := s.Read("a"); err != nil {
		t.Errorf("Clean damaged the current version: %v", err)
	}
	// A link planted at .versions/<name> would send writes and pruning elsewhere.
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, versionsDir, "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write("b", c, k, false); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("Write through a link = %v, want a refusal", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("Write put %d entries outside the volume", len(ents))
	}
}

// combined.pem (HAProxy's crt): certificate, chain and key in one 0600 file,
// in the version directory before the swap, or added to the current version
// when a proxy asks for it later.
func TestStoreCombinedPEM(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	check := func(name string, chain, key []byte) {
		t.Helper()
		path := filepath.Join(dir, name, FileCombined)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, err := tls.X509KeyPair(data, data); err != nil {
			t.Errorf("%s is not a certificate and its key: %v", path, err)
		}
		if !bytes.HasPrefix(data, chain) || !bytes.HasSuffix(data, key) {
			t.Errorf("%s is not the chain followed by the key", path)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
		}
	}
	chain, key := ca.issue(t, []string{"a.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("a", chain, key, true); err != nil {
		t.Fatal(err)
	}
	check("a", chain, key)

	chain, key = ca.issue(t, []string{"b.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("b", chain, key, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b", FileCombined)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("combined.pem written unasked: %v", err)
	}
	if err := s.EnsureCombined("b"); err != nil {
		t.Fatal(err)
	}
	check("b", chain, key)
	if err := s.EnsureCombined("b"); err != nil {
		t.Fatalf("a second EnsureCombined: %v", err)
	}

	// A rollback to a version written without it gets one before the swap.
	c2, k2 := ca.issue(t, []string{"c.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("c", c2, k2, false); err != nil {
		t.Fatal(err)
	}
	c3, k3 := ca.issue(t, []string{"c.example.com"}, 90*24*time.Hour)
	if _, err := s.Write("c", c3, k3, false); err != nil {
		t.Fatal(err)
	}
	older, err := s.Versions("c")
	if err != nil || len(older) != 1 {
		t.Fatalf("versions of c: %v, %v", older, err)
	}
	if _, err := s.Restore("c", older[0].Version, true); err != nil {
		t.Fatal(err)
	}
	check("c", c2, k2)
}

// TestStoreSwapsTheLongestName: the longest name ValidateName takes is one
// the store can swap, twice over (the temporary link of a swap is longer
// than the name), so a name that passes the check never fails after the CA
// issued.
func TestStoreSwapsTheLongestName(t *testing.T) {
	name := strings.Repeat("a", 96) + ".com"
	if err := ValidateName(name); err != nil {
		t.Fatalf("ValidateName(%d characters) = %v", len(name), err)
	}
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultOwner)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	var last *Info
	for range 2 {
		chain, key := ca.issue(t, []string{"a.example.com"}, time.Hour)
		if last, err = s.Write(name, chain, key, true); err != nil {
			t.Fatalf("Write of a %d-character name: %v", len(name), err)
		}
	}
	if got, err := s.Read(name); err != nil || got.Fingerprint != last.Fingerprint {
		t.Fatalf("Read = %+v, %v; want the second version", got, err)
	}
}

// An address is one of a certificate's names, in the placeholder and as a
// leaf is read back: a certificate for 192.0.2.10 is for the wish
// "192.0.2.10", never "domains changed" (an order wasted at every check).
func TestAddressesAreNames(t *testing.T) {
	chain, _, err := selfSigned([]string{"192.0.2.10", "a.example.com", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := parseChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 1 {
		t.Fatalf("placeholder SANs: DNS %v, IP %v; want the addresses as IP SANs", leaf.DNSNames, leaf.IPAddresses)
	}
	info := infoOf(leaf)
	if !SameNames(info.Domains, []string{"192.0.2.10", "a.example.com", "2001:db8::1"}) {
		t.Errorf("names read back = %v", info.Domains)
	}
}
