package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// The cluster key, from EDGECERT_CLUSTER_SECRET (HKDF-SHA256), does two
// things:
//   - private keys (certificates' and the ACME account's) are stored in etcd
//     sealed with AES-256-GCM: etcd's disk, its snapshots and backups never
//     hold a plain key;
//   - every document edgecert stores is signed (HMAC-SHA256): one written by
//     anybody without the secret (or copied from another etcd key) does not
//     verify, and is ignored and reported.
//
// The etcd key a value is stored under is part of what is sealed or signed,
// so a value copied to another key does not open. Each sealed value and
// signed document names its key id (a hash of the derived key, never the
// key), so that during a rotation (EDGECERT_CLUSTER_SECRET_PREVIOUS) each
// is opened with the key that made it.

// keys are the keys derived from one secret.
type keys struct {
	aead cipher.AEAD
	mac  []byte
	kid  string // 16 hex digits
}

func deriveKeys(secret []byte) (*keys, error) {
	if len(secret) < 16 {
		return nil, errors.New("the cluster secret is shorter than 16 bytes")
	}
	sealKey, err := hkdf.Key(sha256.New, secret, []byte("edgecert cluster"), "edgecert private keys v1", 32)
	if err != nil {
		return nil, err
	}
	macKey, err := hkdf.Key(sha256.New, secret, []byte("edgecert cluster"), "edgecert documents v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	id := hmac.New(sha256.New, macKey)
	id.Write([]byte("edgecert key id"))
	return &keys{aead: aead, mac: macKey, kid: hex.EncodeToString(id.Sum(nil)[:8])}, nil
}

// sealer seals and opens values, and signs and verifies documents, with the
// cluster's key; during a rotation it also opens and verifies what the
// previous key made.
type sealer struct {
	cur, prev *keys // prev: nil unless rotating
}

// Sealed value formats: version 1 (before key ids) is [1][nonce][sealed];
// version 2 is [2][key id, 8 bytes][nonce][sealed].
const (
	sealV1 = 1
	sealV2 = 2
)

// newKeyring is the sealer for secret, opening what previous (if any)
// sealed too.
func newKeyring(secret, previous []byte) (*sealer, error) {
	cur, err := deriveKeys(secret)
	if err != nil {
		return nil, err
	}
	s := &sealer{cur: cur}
	if len(previous) > 0 {
		if s.prev, err = deriveKeys(previous); err != nil {
			return nil, fmt.Errorf("the previous cluster secret: %w", err)
		}
		if s.prev.kid == cur.kid {
			s.prev = nil // the same secret twice
		}
	}
	return s, nil
}

// byKid returns the keys whose id is kid, or nil.
func (s *sealer) byKid(kid string) *keys {
	for _, k := range []*keys{s.cur, s.prev} {
		if k != nil && k.kid == kid {
			return k
		}
	}
	return nil
}

func (s *sealer) seal(etcdKey string, plain []byte) []byte {
	k := s.cur
	n := k.aead.NonceSize()
	out := make([]byte, 9+n, 9+n+len(plain)+k.aead.Overhead())
	out[0] = sealV2
	kid, _ := hex.DecodeString(k.kid)
	copy(out[1:9], kid)
	_, _ = rand.Read(out[9:]) // crypto/rand never fails (Go 1.24+)
	return k.aead.Seal(out, out[9:], plain, []byte(etcdKey))
}

func (s *sealer) open(etcdKey string, sealed []byte) ([]byte, error) {
	n := s.cur.aead.NonceSize()
	switch {
	case len(sealed) >= 9+n && sealed[0] == sealV2:
		k := s.byKid(hex.EncodeToString(sealed[1:9]))
		if k == nil {
			return nil, fmt.Errorf("%s: sealed with key id %x, not this host's EDGECERT_CLUSTER_SECRET (key id %s)", etcdKey, sealed[1:9], s.cur.kid)
		}
		plain, err := k.aead.Open(nil, sealed[9:9+n], sealed[9+n:], []byte(etcdKey))
		if err != nil {
			return nil, fmt.Errorf("%s: the sealed key does not open (tampered, or copied from another key): %w", etcdKey, err)
		}
		return plain, nil
	case len(sealed) >= 1+n && sealed[0] == sealV1:
		for _, k := range []*keys{s.cur, s.prev} {
			if k == nil {
				continue
			}
			if plain, err := k.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(etcdKey)); err == nil {
				return plain, nil
			}
		}
		return nil, fmt.Errorf("%s: cannot open the sealed key (another EDGECERT_CLUSTER_SECRET?)", etcdKey)
	}
	return nil, fmt.Errorf("%s: not a sealed value of a known version", etcdKey)
}

// envelope is how every document is stored: the document itself, the id of
// the key that signed it, and the signature over the etcd key and document.
type envelope struct {
	Kid string          `json:"kid"`
	MAC []byte          `json:"mac"`
	Doc json.RawMessage `json:"doc"`
}

func mac(k *keys, etcdKey string, doc []byte) []byte {
	h := hmac.New(sha256.New, k.mac)
	h.Write([]byte(etcdKey))
	h.Write([]byte{0})
	h.Write(doc)
	return h.Sum(nil)
}

// sign returns doc as stored under etcdKey, signed with the current key.
func (s *sealer) sign(etcdKey string, doc any) (string, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	out, err := json.Marshal(envelope{Kid: s.cur.kid, MAC: mac(s.cur, etcdKey, body), Doc: body})
	return string(out), err
}

// errUnverified is a document that does not verify with the cluster's key.
var errUnverified = errors.New("does not verify with the cluster key")

// verify checks value, stored under etcdKey, and decodes its document into
// doc. It also returns the id of the key that signed it.
func (s *sealer) verify(etcdKey string, value []byte, doc any) (kid string, err error) {
	var env envelope
	if err := json.Unmarshal(value, &env); err != nil || len(env.MAC) == 0 || len(env.Doc) == 0 {
		return "", fmt.Errorf("%s: not a signed document: %w", etcdKey, errUnverified)
	}
	k := s.byKid(env.Kid)
	if k == nil {
		return env.Kid, fmt.Errorf("%s: signed with key id %q, not this host's EDGECERT_CLUSTER_SECRET (key id %s): %w", etcdKey, env.Kid, s.cur.kid, errUnverified)
	}
	if !hmac.Equal(env.MAC, mac(k, etcdKey, env.Doc)) {
		return env.Kid, fmt.Errorf("%s: forged, tampered or copied from another key: %w", etcdKey, errUnverified)
	}
	if err := json.Unmarshal(env.Doc, doc); err != nil {
		return env.Kid, fmt.Errorf("%s: %w", etcdKey, err)
	}
	return env.Kid, nil
}
