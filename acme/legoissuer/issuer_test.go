package legoissuer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"

	"github.com/edgecert/edgecert/acme"
)

func TestKeyTypesCoverAcmesList(t *testing.T) {
	for _, k := range acme.KeyTypes {
		if _, ok := keyTypes[k]; !ok {
			t.Errorf("acme.KeyTypes has %q, which lego is not told how to order", k)
		}
	}
	for k := range keyTypes {
		if !slices.Contains(acme.KeyTypes, k) {
			t.Errorf("lego key type %q is not in acme.KeyTypes: labels could not name it", k)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		desc       string
		err        error
		permanent  bool
		retryAfter time.Duration
	}{
		{desc: "a network error: retry by the table", err: errors.New("dial tcp: connection refused")},
		{desc: "a rejected name: permanent", err: &legoacme.ProblemDetails{Type: "urn:ietf:params:acme:error:rejectedIdentifier"}, permanent: true},
		{desc: "CAA forbids: permanent", err: &legoacme.ProblemDetails{Type: "urn:ietf:params:acme:error:caa"}, permanent: true},
		{desc: "a failed validation: retry", err: &legoacme.ProblemDetails{Type: "urn:ietf:params:acme:error:unauthorized"}},
		{desc: "rate limited: the CA's Retry-After", err: &legoacme.RateLimitedError{ProblemDetails: &legoacme.ProblemDetails{Type: legoacme.RateLimitedErr}, RetryAfter: "120"},
			retryAfter: 2 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			oe := classify(context.Background(), tc.err)
			if oe.Permanent != tc.permanent || oe.RetryAfter != tc.retryAfter || !errors.Is(oe, tc.err) {
				t.Errorf("classify = %+v, want permanent=%v retry_after=%v wrapping the error", oe, tc.permanent, tc.retryAfter)
			}
		})
	}
}

func TestNewRefusesABadConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(Config{KeyType: "dsa1024", Webroot: dir, StateDir: dir}, slog.Default()); err == nil || !strings.Contains(err.Error(), "ec256") {
		t.Errorf("unknown key type: %v, want an error listing the key types", err)
	}
	if _, err := New(Config{KeyType: "ec256", Webroot: dir, StateDir: dir, EABKid: "kid"}, slog.Default()); err == nil {
		t.Errorf("EAB key ID without HMAC accepted")
	}
	if _, err := New(Config{KeyType: "ec256", Webroot: dir, StateDir: dir, Directory: "https://ca.test/dir"}, slog.Default()); err != nil {
		t.Errorf("a good config: %v (New must not contact the CA)", err)
	}
}

func TestLegoLogLevels(t *testing.T) {
	var b bytes.Buffer
	g := legoLogger{slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	g.Printf("[INFO] [a.test] acme: Trying to solve HTTP-01")
	g.Println("[WARN] [a.test] acme: slow")
	g.Fatalf("cannot happen in a library: %d", 1)
	out := b.String()
	if strings.Contains(out, "Trying to solve") || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("lego's lines routed wrongly:\n%s", out)
	}
}

func TestOrderKeyReusesOnlyAKeyOfTheWantedType(t *testing.T) {
	ec, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := certcrypto.PEMEncode(ec)
	got, err := orderKey(certcrypto.EC256, pemKey)
	if err != nil || !ec.(*ecdsa.PrivateKey).Equal(got) {
		t.Errorf("orderKey(ec256, an ec256 key) = %v, %v: want the same key", got, err)
	}
	got, err = orderKey(certcrypto.EC384, pemKey)
	if err != nil || keyTypeOf(got) != certcrypto.EC384 {
		t.Errorf("orderKey(ec384, an ec256 key) = %v, %v: want a new ec384 key", keyTypeOf(got), err)
	}
	got, err = orderKey(certcrypto.EC256, []byte("not a key"))
	if err != nil || keyTypeOf(got) != certcrypto.EC256 || ec.(*ecdsa.PrivateKey).Equal(got) {
		t.Errorf("orderKey(ec256, garbage) = %v, %v: want a new ec256 key", got, err)
	}
}

func TestPollWaits(t *testing.T) {
	var waits []time.Duration
	w := time.Duration(0)
	for range 10 {
		w = nextWait(w)
		waits = append(waits, w)
	}
	if waits[0] != pollFirst || waits[len(waits)-1] != pollCap {
		t.Errorf("waits = %v: want %v first, growing to %v", waits, pollFirst, pollCap)
	}
	// A Retry-After longer than the cap is kept.
	if got := nextWait(5 * time.Second); got != 5*time.Second {
		t.Errorf("after a 5s Retry-After: %v", got)
	}
	// Cancelling stops the polling at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := poll(ctx, time.Hour, func() (bool, error) { calls++; return false, nil })
	if !errors.Is(err, context.Canceled) || calls != 0 {
		t.Errorf("poll on a cancelled context = %v after %d checks", err, calls)
	}
}
