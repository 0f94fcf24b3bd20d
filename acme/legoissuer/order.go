package legoissuer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/challenge/http01"
)

// How an order is driven (RFC 8555 section 7.4) on lego's ACME layer, without
// lego's fixed waits: every authorization of the order is presented and its
// challenge posted at once, each is polled quickly at first and then less
// often, the order is finalized as soon as all are valid, and every step
// stops when ctx is cancelled.

// Polling: the first look comes pollFirst after posting, each wait is
// pollGrowth times the last, up to pollCap; a Retry-After from the CA wins
// when it is longer. An authorization or order not settled within
// settleTimeout fails the order.
const (
	pollFirst     = 10 * time.Millisecond
	pollGrowth    = 2
	pollCap       = time.Second
	settleTimeout = 3 * time.Minute
)

// orderRun is one order on its own connection to the CA: a lego api.Core
// whose HTTP requests all carry the order's context.
type orderRun struct {
	core    *api.Core
	tr      *ctxTransport // core's: detached from the order's context at finalize
	webroot string
	share   TokenSharer // nil: the token is served by this host only
	domains []string
	log     func(msg string, args ...any)
	// DNS-PERSIST-01 when persist is set; DNS-01 through dns when set;
	// HTTP-01 into webroot otherwise.
	persist bool
	dns     challenge.Provider
	dnsOpts []dns01.ChallengeOption

	recordsMu sync.Mutex
	records   map[string]*sync.Mutex // DNS-01: one proof at a time per record
}

// ctxTransport sends each request with the order's context, so cancelling
// the order cancels the request in flight (lego's api layer takes none).
// The context is swapped once the order is finalized (detach).
type ctxTransport struct {
	mu   sync.Mutex
	ctx  context.Context
	base http.RoundTripper
}

func (t *ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	ctx := t.ctx
	t.mu.Unlock()
	return t.base.RoundTrip(r.WithContext(ctx))
}

func (t *ctxTransport) set(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
}

// newCore opens the order's connection to the CA for the account kid/key.
// A cancelled ctx cancels every request made through it, until the
// transport is given another context.
func (l *Issuer) newCore(ctx context.Context, kid string, key crypto.PrivateKey) (*api.Core, *ctxTransport, error) {
	tr := &ctxTransport{ctx: ctx, base: l.http.Transport}
	hc := &http.Client{Timeout: l.http.Timeout, Transport: tr}
	core, err := api.New(hc, "edgecert", l.cfg.Directory, kid, key)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("ACME directory %s: %w", l.cfg.Directory, err)
	}
	return core, tr, nil
}

// finishTimeout bounds what follows finalize: the order's settling and the
// certificate's download. They run on a context of their own: once the CA
// has been asked to issue, the certificate is fetched whatever happens to
// the order's context (its deadline, a lost cluster lease, a stop), so an
// issued certificate is never thrown away and never ordered twice.
const finishTimeout = 2 * time.Minute

// obtain places the order, proves every name and returns the issued chain
// (leaf first, PEM) for a CSR signed by pk.
func (r *orderRun) obtain(ctx context.Context, opts *api.OrderOptions, pk crypto.PrivateKey) ([]byte, error) {
	order, err := r.core.Orders.NewWithOptions(r.domains, opts)
	if err != nil {
		return nil, err
	}
	if err := r.authorize(ctx, order); err != nil {
		r.deactivate(ctx, order)
		return nil, err
	}
	ready, err := r.settle(ctx, order.Location, legoacme.StatusReady)
	if err != nil {
		return nil, err
	}
	csr, err := csrFor(pk, r.domains)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err() // not finalized: nothing issued yet
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	r.tr.set(ctx)
	final, err := r.core.Orders.UpdateForCSR(ready.Finalize, csr)
	if err != nil {
		return nil, fmt.Errorf("finalize: %w", err)
	}
	if final.Status != legoacme.StatusValid {
		if final, err = r.settle(ctx, order.Location, legoacme.StatusValid); err != nil {
			return nil, err
		}
	}
	if final.Certificate == "" {
		return nil, errors.New("the CA marked the order valid without a certificate URL")
	}
	chain, _, err := r.core.Certificates.Get(final.Certificate, true)
	if err != nil {
		return nil, fmt.Errorf("download certificate: %w", err)
	}
	return chain, nil
}

// csrFor is the certificate request for domains: every name a SAN (an
// address an IP SAN), the CN as commonName says.
func csrFor(pk crypto.PrivateKey, domains []string) ([]byte, error) {
	return certcrypto.CreateCSR(pk, certcrypto.CSROptions{Domain: commonName(domains), SAN: domains})
}

// commonName is the first name when it fits a subject CN (64 bytes), as lego
// does; none when the certificate has an IP address (Let's Encrypt refuses a
// CSR with an address in its CN, and its certificates for addresses have
// no subject).
func commonName(domains []string) string {
	if slices.ContainsFunc(domains, isIP) || len(domains[0]) > 64 {
		return ""
	}
	return domains[0]
}

func isIP(d string) bool {
	_, err := netip.ParseAddr(d)
	return err == nil
}

// authorize proves every authorization of order, all at once, and waits
// until each is valid. The first failure is returned; the token files are
// removed in every case.
func (r *orderRun) authorize(ctx context.Context, order legoacme.ExtendedOrder) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(order.Authorizations))
	var wg sync.WaitGroup
	for i, url := range order.Authorizations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = r.prove(ctx, url); errs[i] != nil {
				cancel() // one name failed: the order cannot succeed, stop the others
			}
		}()
	}
	wg.Wait()
	// The first error that is not the cancellation the others caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// prove makes one authorization valid, over DNS-01 when the order has a
// DNS provider, over HTTP-01 otherwise.
func (r *orderRun) prove(ctx context.Context, authzURL string) error {
	authz, err := r.core.Authorizations.Get(authzURL)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	name := authz.Identifier.Value
	if authz.Status == legoacme.StatusValid {
		return nil // the CA still trusts an earlier validation
	}
	if done, err := authzStatus(authz); done || err != nil {
		return withName(name, err)
	}
	if r.persist {
		return r.provePersist(ctx, authz)
	}
	if r.dns != nil {
		return r.proveDNS(ctx, authz)
	}
	var chal *legoacme.Challenge
	for i := range authz.Challenges {
		if authz.Challenges[i].Type == "http-01" {
			chal = &authz.Challenges[i]
		}
	}
	if chal == nil {
		return fmt.Errorf("%s: the CA offers no http-01 challenge", name)
	}
	keyAuth, err := r.core.GetKeyAuthorization(chal.Token)
	if err != nil {
		return fmt.Errorf("%s: key authorization: %w", name, err)
	}
	path, err := r.present(chal.Token, keyAuth)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer os.Remove(path)
	if r.share != nil {
		withdraw, err := r.share.ShareToken(ctx, name, chal.Token, keyAuth)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer withdraw()
	}
	wait := pollFirst
	if chal.Status == legoacme.StatusPending {
		posted, err := r.core.Challenges.New(chal.URL)
		if err != nil {
			return fmt.Errorf("%s: start validation: %w", name, err)
		}
		if posted.Status == legoacme.StatusValid {
			return nil
		}
		if posted.Status == legoacme.StatusInvalid {
			return fmt.Errorf("%s: %w", name, posted.Err())
		}
		if ra, err := api.ParseRetryAfter(posted.RetryAfter); err == nil && ra > wait {
			wait = ra
		}
	}
	return poll(ctx, wait, func() (bool, error) {
		authz, err := r.core.Authorizations.Get(authzURL)
		if err != nil {
			return false, fmt.Errorf("authorization: %w", err)
		}
		done, err := authzStatus(authz)
		return done, withName(name, err)
	})
}

func withName(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// authzStatus says whether an authorization is valid, still pending, or
// failed (with the CA's reason).
func authzStatus(a legoacme.Authorization) (bool, error) {
	switch a.Status {
	case legoacme.StatusValid:
		return true, nil
	case legoacme.StatusPending, legoacme.StatusProcessing:
		return false, nil
	case legoacme.StatusInvalid:
		for _, c := range a.Challenges {
			if c.Status == legoacme.StatusInvalid && c.Error != nil {
				return false, c.Err()
			}
		}
		return false, errors.New("the CA could not validate the name")
	}
	return false, fmt.Errorf("the authorization is %s", a.Status)
}

// present writes the token file nginx serves at
// /.well-known/acme-challenge/<token>, readable by nginx's workers.
func (r *orderRun) present(token, keyAuth string) (string, error) {
	if token == "" || strings.ContainsAny(token, "/\\.") {
		return "", fmt.Errorf("the CA sent an unusable token %q", token)
	}
	path := filepath.Join(r.webroot, http01.ChallengePath(token))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("webroot: %w", err)
	}
	if err := os.WriteFile(path, []byte(keyAuth), 0o644); err != nil {
		return "", fmt.Errorf("webroot: %w", err)
	}
	return path, nil
}

// settle polls the order until it reaches want (ready or valid).
func (r *orderRun) settle(ctx context.Context, orderURL, want string) (legoacme.ExtendedOrder, error) {
	var last legoacme.ExtendedOrder
	err := poll(ctx, 0, func() (bool, error) {
		o, err := r.core.Orders.Get(orderURL)
		if err != nil {
			return false, fmt.Errorf("order: %w", err)
		}
		last = o
		switch o.Status {
		case want, legoacme.StatusValid:
			return true, nil
		case legoacme.StatusInvalid:
			return false, fmt.Errorf("invalid order: %w", o.Err())
		}
		return false, nil
	})
	return last, err
}

// deactivate gives back the authorizations a failed order left pending, so
// they do not count against the CA's limit on pending authorizations.
func (r *orderRun) deactivate(ctx context.Context, order legoacme.ExtendedOrder) {
	if ctx.Err() != nil {
		return
	}
	for _, url := range order.Authorizations {
		a, err := r.core.Authorizations.Get(url)
		if err != nil || a.Status != legoacme.StatusPending {
			continue
		}
		if err := r.core.Authorizations.Deactivate(url); err != nil {
			r.log("cannot deactivate a pending authorization", "authz", url, "err", err)
		}
	}
}

// poll calls check after first, then again with growing waits, until it
// says done, fails, ctx ends or settleTimeout passes.
func poll(ctx context.Context, first time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(settleTimeout)
	wait := first
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		done, err := check()
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CA did not finish within %s", settleTimeout)
		}
		wait = nextWait(wait)
	}
}

// nextWait is the wait after one of w: pollFirst at first, then growing to pollCap.
func nextWait(w time.Duration) time.Duration {
	if w < pollFirst {
		return pollFirst
	}
	return min(w*pollGrowth, max(pollCap, w))
}
