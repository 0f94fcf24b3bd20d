package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Private keys (certificates' and the ACME account's) are stored in etcd
// sealed with AES-256-GCM, under a key derived (HKDF-SHA256) from the
// cluster secret: etcd's disk, its snapshots and backups never hold a plain
// key. The etcd key a value is stored under is its additional data, so a
// sealed value copied to another key does not open.

// sealer seals and opens values with the cluster's key.
type sealer struct{ aead cipher.AEAD }

const sealVersion = 1 // the first byte of a sealed value

func newSealer(secret []byte) (*sealer, error) {
	if len(secret) < 16 {
		return nil, errors.New("the cluster secret is shorter than 16 bytes")
	}
	key, err := hkdf.Key(sha256.New, secret, []byte("edgecert cluster"), "edgecert private keys v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(etcdKey string, plain []byte) []byte {
	n := s.aead.NonceSize()
	out := make([]byte, 1+n, 1+n+len(plain)+s.aead.Overhead())
	out[0] = sealVersion
	_, _ = rand.Read(out[1:]) // crypto/rand never fails (Go 1.24+)
	return s.aead.Seal(out, out[1:], plain, []byte(etcdKey))
}

func (s *sealer) open(etcdKey string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%s: not a sealed value of this version", etcdKey)
	}
	plain, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(etcdKey))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot open the sealed key (another EDGECERT_CLUSTER_SECRET?): %w", etcdKey, err)
	}
	return plain, nil
}
