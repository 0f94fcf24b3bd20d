package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/edgecert/edgecert/signal"
)

// challengePreflight is acme's preflight for HTTP-01: it writes a probe token
// where lego writes its tokens and checks that a running proxy serves it for
// every domain, so no order is placed (and no failed validation counted
// against the CA's limits) while nginx is still starting or misconfigured.
type challengePreflight struct {
	webroot string
	proxies interface{ Proxies() []signal.Proxy } // the running proxies (signal's Batcher)
	probe   interface {                           // fetches a URL from a proxy (signal's Reloader)
		ServesFile(ctx context.Context, p signal.Proxy, port int, host, path string, want []byte) error
	}
	log *slog.Logger
}

func (c *challengePreflight) Preflight(ctx context.Context, domains []string) error {
	proxies := c.proxies.Proxies()
	if len(proxies) == 0 {
		return nil // nginx runs outside Docker, or unlabelled: nothing to check
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	token := "edgecert-preflight-" + hex.EncodeToString(b)
	dir := filepath.Join(c.webroot, ".well-known", "acme-challenge")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("webroot: %w", err)
	}
	file := filepath.Join(dir, token)
	if err := os.WriteFile(file, []byte(token), 0o644); err != nil {
		return fmt.Errorf("webroot: %w", err)
	}
	defer os.Remove(file)
	for _, d := range domains {
		if err := c.served(ctx, proxies, d, token, []byte(token)); err != nil {
			return fmt.Errorf("no proxy serves the challenge directory for %s (nginx needs `location ^~ /.well-known/acme-challenge/ { root %s; }` on port 80): %w",
				d, c.webroot, err)
		}
	}
	return nil
}

// CheckToken makes sure a running proxy of this host serves an HTTP-01
// token another host of the cluster ordered (the cluster wrote its file).
func (c *challengePreflight) CheckToken(ctx context.Context, domain, token, keyAuth string) error {
	proxies := c.proxies.Proxies()
	if len(proxies) == 0 {
		return nil
	}
	return c.served(ctx, proxies, domain, token, []byte(keyAuth))
}

// served checks that one of proxies serves the challenge file token with
// content want for domain; proxies it cannot reach (no shared network) or
// that redirect elsewhere are not counted against it.
func (c *challengePreflight) served(ctx context.Context, proxies []signal.Proxy, domain, token string, want []byte) error {
	var errs []error
	checked := false
	for _, p := range proxies {
		err := c.probe.ServesFile(ctx, p, 80, domain, "/.well-known/acme-challenge/"+token, want)
		if errors.Is(err, signal.ErrNoSharedNetwork) {
			continue
		}
		checked = true
		if errors.Is(err, signal.ErrRedirectedAway) {
			// Where the CA will be sent cannot be checked from here:
			// let it decide rather than never order.
			c.log.Warn("preflight cannot check the challenge URL; ordering anyway", "container", p.Name, "domains", domain, "err", err)
			err = nil
		}
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if !checked {
		return nil
	}
	return errors.Join(errs...)
}
