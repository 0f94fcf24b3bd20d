package legoissuer

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// hangingCA is an ACME server that registers accounts and then holds every
// new order until the client gives up.
func hangingCA(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var orders atomic.Int32
	release := make(chan struct{})
	var srv *httptest.Server
	var nonce atomic.Int64
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("n%d", nonce.Add(1)))
		switch r.URL.Path {
		case "/dir":
			_ = json.NewEncoder(w).Encode(map[string]string{"newNonce": srv.URL + "/nonce", "newAccount": srv.URL + "/acct", "newOrder": srv.URL + "/order"})
		case "/nonce":
			w.WriteHeader(http.StatusOK)
		case "/acct":
			w.Header().Set("Location", srv.URL+"/acct/1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"status":"valid"}`)
		case "/order":
			orders.Add(1)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv, &orders
}

func TestObtainStopsWhenItsContextEnds(t *testing.T) {
	srv, orders := hangingCA(t)
	dir := t.TempDir()
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	iss, err := New(Config{Directory: srv.URL + "/dir", KeyType: "ec256", Webroot: dir, StateDir: dir, RootsFile: roots},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := iss.Obtain(ctx, acme.Order{Domains: []string{"a.example.com"}})
		done <- err
	}()
	deadline := time.After(30 * time.Second)
	for orders.Load() == 0 {
		select {
		case err := <-done:
			t.Fatalf("Obtain ended before its order reached the CA: %v", err)
		case <-deadline:
			t.Fatal("the order never reached the CA")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	// The CA holds the order until the test ends: only the cancellation can
	// end Obtain.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Obtain = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Obtain still waits on the CA after its context was cancelled")
	}
}
