package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// htpasswd is the status page's basic authentication: the bcrypt lines of
// an htpasswd file (`htpasswd -B`, or `caddy hash-password` output after
// "user:"). Other schemes (MD5 apr1, SHA1, crypt) are refused when the file
// is read: they are too weak for a page published beyond a private network.
type htpasswd struct {
	users map[string][]byte // user -> bcrypt hash

	mu   sync.Mutex
	good map[[32]byte]time.Time // digests of recently checked credentials, until when they hold
}

// credentialTTL is how long a checked user and password are taken without
// bcrypt again: the page's script fetches on every change, and bcrypt is
// meant to be slow.
const credentialTTL = 5 * time.Minute

// dummyHash is compared against when the user is unknown, so that an
// unknown user takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("edgecert-no-such-user"), bcrypt.MinCost)

// readHtpasswd reads path: "user:$2y$..." lines; blank lines and lines
// starting with # are skipped.
func readHtpasswd(path string) (*htpasswd, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &htpasswd{users: map[string][]byte{}, good: map[[32]byte]time.Time{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%s line %d: want user:hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s line %d (user %q): not a bcrypt hash (make one with htpasswd -B): %w", path, n, user, err)
		}
		h.users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(h.users) == 0 {
		return nil, fmt.Errorf("%s: no user", path)
	}
	return h, nil
}

// check says whether user and pass are one of the file's users.
func (h *htpasswd) check(user, pass string) bool {
	digest := sha256.Sum256([]byte(user + "\x00" + pass))
	now := time.Now()
	h.mu.Lock()
	until, seen := h.good[digest]
	h.mu.Unlock()
	if seen && now.Before(until) {
		return true
	}
	hash, known := h.users[user]
	if !known {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(pass))
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, t := range h.good {
		if now.After(t) {
			delete(h.good, k)
		}
	}
	h.good[digest] = now.Add(credentialTTL)
	return true
}
