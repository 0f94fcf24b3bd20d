package cluster

import (
	"bytes"
	"testing"
)

func TestSeal(t *testing.T) {
	s, err := newKeyring([]byte("a cluster secret of enough length"), nil)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----\n")
	sealed := s.seal("/edgecert/certs/x", key)
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("the sealed value holds the plain key")
	}
	got, err := s.open("/edgecert/certs/x", sealed)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("open: %q, %v", got, err)
	}
	if _, err := s.open("/edgecert/certs/y", sealed); err == nil {
		t.Error("a sealed value opened under another etcd key")
	}
	other, _ := newKeyring([]byte("another cluster secret, also long"), nil)
	if _, err := other.open("/edgecert/certs/x", sealed); err == nil {
		t.Error("a sealed value opened with another secret")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.open("/edgecert/certs/x", sealed); err == nil {
		t.Error("a tampered value opened")
	}
	if _, err := newKeyring([]byte("short"), nil); err == nil {
		t.Error("a 5-byte secret was taken")
	}
}

func TestID(t *testing.T) {
	const dir = "https://ca.test/dir"
	base := ID([]string{"a.test", "b.test"}, "ec256", "", dir)
	for _, tc := range []struct {
		desc string
		id   string
		same bool
	}{
		{desc: "names in another order", id: ID([]string{"b.test", "a.test"}, "ec256", "", dir), same: true},
		{desc: "another key type", id: ID([]string{"a.test", "b.test"}, "rsa2048", "", dir)},
		{desc: "another profile", id: ID([]string{"a.test", "b.test"}, "ec256", "shortlived", dir)},
		{desc: "another CA directory", id: ID([]string{"a.test", "b.test"}, "ec256", "", "https://staging.test/dir")},
		{desc: "another name", id: ID([]string{"a.test", "c.test"}, "ec256", "", dir)},
	} {
		if (tc.id == base) != tc.same {
			t.Errorf("%s: same identity = %v, want %v", tc.desc, tc.id == base, tc.same)
		}
	}
}

func TestKeyringOpensWhatThePreviousSecretMade(t *testing.T) {
	old, _ := newKeyring([]byte("the old cluster secret, long"), nil)
	rotating, err := newKeyring([]byte("the new cluster secret, long"), []byte("the old cluster secret, long"))
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := newKeyring([]byte("the new cluster secret, long"), nil)
	sealed := old.seal("/p/certs/x", []byte("key"))
	if got, err := rotating.open("/p/certs/x", sealed); err != nil || string(got) != "key" {
		t.Errorf("the rotating host opening the old key's value: %q, %v", got, err)
	}
	if _, err := fresh.open("/p/certs/x", sealed); err == nil || !bytes.Contains([]byte(err.Error()), []byte("EDGECERT_CLUSTER_SECRET")) {
		t.Errorf("a host with the new secret only: %v", err)
	}
	doc, _ := old.sign("/p/retry/x", map[string]int{"failures": 2})
	var got map[string]int
	if kid, err := rotating.verify("/p/retry/x", []byte(doc), &got); err != nil || kid != old.cur.kid || got["failures"] != 2 {
		t.Errorf("verify with the previous key: %v, %v, %v", kid, got, err)
	}
	if _, err := fresh.verify("/p/retry/x", []byte(doc), &got); err == nil {
		t.Error("a document signed with another key verified")
	}
	if _, err := old.verify("/p/retry/y", []byte(doc), &got); err == nil {
		t.Error("a document copied to another key verified")
	}
	if old.cur.kid == fresh.cur.kid || len(old.cur.kid) != 16 {
		t.Errorf("key ids %q and %q", old.cur.kid, fresh.cur.kid)
	}
}
