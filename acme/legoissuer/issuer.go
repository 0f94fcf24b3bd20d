// Package legoissuer is acme's issuer on github.com/go-acme/lego/v4: ACME
// accounts (one per CA and contact, kept in the state volume), orders over
// HTTP-01 through the webroot nginx serves, ARI, and lego's log routed to
// slog. It is the only package that imports lego.
package legoissuer

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"

	"github.com/edgecert/edgecert/acme"
)

// Well-known directories.
const (
	DirectoryProduction = lego.LEDirectoryProduction
	DirectoryStaging    = lego.LEDirectoryStaging
)

// Config configures the ACME client.
type Config struct {
	Directory string // ACME directory URL
	Email     string // default account contact, may be empty
	Profile   string // default ACME profile, may be empty (the CA's default)
	KeyType   string // default key type: ec256, ec384, rsa2048, rsa3072, rsa4096
	RootsFile string // extra PEM roots to trust for the ACME server
	Webroot   string // HTTP-01 token directory served by nginx
	StateDir  string // account keys and registrations live here
	EABKid    string // External Account Binding key ID, for CAs that need one
	EABHMAC   string // External Account Binding HMAC key (base64url)
	// DNS-01: the providers (lego names; configured by lego's environment
	// variables), the resolvers that find a name's zone and servers ("" the
	// system's), and their timeout (0: lego's 10 s).
	DNSProviders []string
	DNSResolvers []string
	DNSTimeout   time.Duration
	// Tokens, in a cluster, has each HTTP-01 token served by every host
	// before the CA is told to validate it. nil: this host only.
	Tokens TokenSharer
	// Accounts, in a cluster, shares the ACME accounts between hosts, so
	// that every host orders (and replaces) as the same account. nil: the
	// state volume only.
	Accounts AccountStore
}

// AccountStore keeps ACME accounts where every host of a cluster finds
// them. LoadAccount returns fs.ErrNotExist for an account never saved;
// LockAccount serialises its creation across hosts.
type AccountStore interface {
	LoadAccount(ctx context.Context, id string) (key, registration []byte, err error)
	SaveAccount(ctx context.Context, id string, key, registration []byte) error
	LockAccount(ctx context.Context, id string) (unlock func(), err error)
}

// TokenSharer gets an HTTP-01 token served by the other hosts of a cluster;
// withdraw takes it back once the CA has validated (or not).
type TokenSharer interface {
	ShareToken(ctx context.Context, domain, token, keyAuth string) (withdraw func(), err error)
}

// keyTypes maps acme.KeyTypes to lego's key types.
var keyTypes = map[string]certcrypto.KeyType{
	"ec256": certcrypto.EC256, "ec384": certcrypto.EC384,
	"rsa2048": certcrypto.RSA2048, "rsa3072": certcrypto.RSA3072, "rsa4096": certcrypto.RSA4096,
}

// Issuer obtains certificates with lego over HTTP-01 (webroot). It
// registers one account per contact email and reuses them across restarts.
type Issuer struct {
	cfg  Config
	http *http.Client
	log  *slog.Logger

	dns     map[string]challenge.Provider // by lego name
	dnsOpts []dns01.ChallengeOption

	mu      sync.Mutex
	clients map[string]*lego.Client // by email
	accts   map[string]*account
}

// New checks cfg and prepares the HTTP client. It does not contact
// the CA: that happens on the first order, so a CA that is down at start-up
// is retried like any other failure.
func New(cfg Config, log *slog.Logger) (*Issuer, error) {
	if _, ok := keyTypes[cfg.KeyType]; !ok {
		return nil, fmt.Errorf("key type %q: want one of %s", cfg.KeyType, strings.Join(acme.KeyTypes, ", "))
	}
	if (cfg.EABKid == "") != (cfg.EABHMAC == "") {
		return nil, errors.New("external account binding needs both a key ID and an HMAC key")
	}
	if err := os.MkdirAll(cfg.Webroot, 0o755); err != nil {
		return nil, fmt.Errorf("webroot: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if cfg.RootsFile != "" {
		pemBytes, err := os.ReadFile(cfg.RootsFile)
		if err != nil {
			return nil, fmt.Errorf("ACME roots: %w", err)
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("ACME roots: no PEM certificate in %s", cfg.RootsFile)
		}
	}
	hc := &http.Client{
		Timeout: 2 * time.Minute,
		Transport: newBudget(&http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   16,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}),
	}
	dns, err := newDNSProviders(cfg.DNSProviders)
	if err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, http: hc, log: log, dns: dns, dnsOpts: dnsOptions(cfg.DNSResolvers, cfg.DNSTimeout),
		clients: map[string]*lego.Client{}, accts: map[string]*account{}}, nil
}

// Directory is the CA this issuer orders from.
func (l *Issuer) Directory() string { return l.cfg.Directory }

// Obtain orders a certificate and returns the PEM chain (leaf first) and key.
// The order is driven on lego's ACME layer (order.go): all names at once,
// no fixed waits, and cancelling ctx stops it at once. Errors are *OrderError.
func (l *Issuer) Obtain(ctx context.Context, o acme.Order) (chain, key []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	email := cmp.Or(o.Email, l.cfg.Email)
	kt := keyTypes[cmp.Or(o.KeyType, l.cfg.KeyType)]
	if kt == "" {
		return nil, nil, &acme.OrderError{Err: fmt.Errorf("key type %q is not supported", o.KeyType), Permanent: true}
	}
	pk, err := orderKey(kt, o.Key)
	if err != nil {
		return nil, nil, &acme.OrderError{Err: err}
	}
	domains := slices.Clone(o.Domains)
	opts := &api.OrderOptions{Profile: cmp.Or(o.Profile, l.cfg.Profile)}
	if o.Replaces != nil {
		if opts.ReplacesCertID, err = certificate.MakeARICertID(o.Replaces); err != nil {
			opts.ReplacesCertID = ""
		}
	}
	reregistered := false
	for {
		acct, err := l.account(email)
		if err != nil {
			return nil, nil, classify(ctx, err)
		}
		core, tr, err := l.newCore(ctx, acct.Registration.URI, acct.key)
		if err != nil {
			return nil, nil, classify(ctx, err)
		}
		if err := checkProfile(opts.Profile, core.GetDirectory().Meta.Profiles, domains); err != nil {
			return nil, nil, &acme.OrderError{Err: err, Permanent: true}
		}
		run := &orderRun{core: core, tr: tr, webroot: l.cfg.Webroot, domains: domains, log: l.log.Warn, share: l.cfg.Tokens}
		switch o.Challenge {
		case acme.ChallengeDNS:
			if run.dns = l.dns[o.DNS]; run.dns == nil {
				return nil, nil, &acme.OrderError{Err: fmt.Errorf("DNS provider %q is not configured (EDGECERT_DNS_PROVIDER)", o.DNS), Config: true}
			}
			run.dnsOpts = l.dnsOpts
		case acme.ChallengeDNSPersist:
			if err := l.checkPersistRecords(ctx, core, domains, acct.Registration.URI); err != nil {
				return nil, nil, err
			}
			run.persist = true
		}
		chain, err := run.obtain(ctx, opts, pk)
		if err == nil {
			return chain, certcrypto.PEMEncode(pk), nil
		}
		var pd *legoacme.ProblemDetails
		isProblem := errors.As(err, &pd)
		switch {
		case ctx.Err() != nil:
			return nil, nil, classify(ctx, err)
		case isProblem && pd.Type == "urn:ietf:params:acme:error:accountDoesNotExist" && !reregistered:
			// The CA forgot the account (a test CA restarted, or it was deactivated): register anew.
			l.log.Warn("ACME account unknown to the CA; registering a new one", "err", err)
			l.forget(email)
			reregistered = true
			continue
		case opts.ReplacesCertID != "" && isProblem && replacesRefused(pd):
			// RFC 9773: an order that cannot replace the old certificate is
			// placed again as a plain order.
			l.log.Warn("the CA refused the replacement order; ordering without replaces", "domains", strings.Join(o.Domains, ","), "err", err)
			opts.ReplacesCertID = ""
			continue
		}
		return nil, nil, classify(ctx, err)
	}
}

// checkProfile refuses, before any order, a profile the CA does not list
// among its profiles (when it lists any): a typo, or an IP-address
// certificate at a CA whose short-lived profile has another name, costs no
// order and says what the CA offers.
func checkProfile(profile string, offered map[string]string, domains []string) error {
	if profile == "" || len(offered) == 0 {
		return nil
	}
	if _, ok := offered[profile]; ok {
		return nil
	}
	err := fmt.Errorf("the CA offers no profile %q (it offers: %s); no order placed", profile, strings.Join(slices.Sorted(maps.Keys(offered)), ", "))
	if slices.ContainsFunc(domains, isIP) {
		err = fmt.Errorf("%w: a certificate for an IP address needs the CA's short-lived profile: set edgecert.profile, or EDGECERT_IP_PROFILE for every such certificate", err)
	}
	return err
}

// orderKey is the key the certificate is ordered for: reuse (PEM) when it
// holds a key of type kt, a new one otherwise.
func orderKey(kt certcrypto.KeyType, reuse []byte) (crypto.PrivateKey, error) {
	if len(reuse) > 0 {
		if k, err := certcrypto.ParsePEMPrivateKey(reuse); err == nil && keyTypeOf(k) == kt {
			return k, nil
		}
	}
	pk, err := certcrypto.GeneratePrivateKey(kt)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return pk, nil
}

// keyTypeOf is lego's name for k's type and size, "" if none fits.
func keyTypeOf(k crypto.PrivateKey) certcrypto.KeyType {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return certcrypto.EC256
		case 384:
			return certcrypto.EC384
		}
	case *rsa.PrivateKey:
		switch k.N.BitLen() {
		case 2048:
			return certcrypto.RSA2048
		case 3072:
			return certcrypto.RSA3072
		case 4096:
			return certcrypto.RSA4096
		}
	}
	return ""
}

// replacesRefused says whether an order failed because of its replaces field.
func replacesRefused(pd *legoacme.ProblemDetails) bool {
	switch pd.Type {
	case legoacme.AlreadyReplacedErr, "urn:ietf:params:acme:error:malformed", "urn:ietf:params:acme:error:serverInternal",
		// another account ordered the old one (the contact changed, or
		// another host's account issued it)
		"urn:ietf:params:acme:error:unauthorized":
		return true
	}
	return false
}

// permanentProblems are ACME error types that retrying soon will not fix.
var permanentProblems = map[string]bool{
	"urn:ietf:params:acme:error:rejectedIdentifier":      true,
	"urn:ietf:params:acme:error:unsupportedIdentifier":   true,
	"urn:ietf:params:acme:error:invalidProfile":          true,
	"urn:ietf:params:acme:error:caa":                     true,
	"urn:ietf:params:acme:error:externalAccountRequired": true,
	"urn:ietf:params:acme:error:invalidContact":          true,
	"urn:ietf:params:acme:error:unsupportedContact":      true,
}

func classify(ctx context.Context, err error) *acme.OrderError {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	oe := &acme.OrderError{Err: err}
	var de dnsError
	oe.Config = errors.As(err, &de)
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) {
		oe.RetryAfter, _ = api.ParseRetryAfter(rl.RetryAfter)
	}
	var pd *legoacme.ProblemDetails
	if errors.As(err, &pd) && permanentProblems[pd.Type] {
		oe.Permanent = true
	}
	return oe
}

// RenewalInfo asks the CA when to renew leaf (RFC 9773). It returns ErrNoARI
// when the CA offers none.
func (l *Issuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*acme.RenewalInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, err := l.client(l.cfg.Email)
	if err != nil {
		return nil, err
	}
	ri, err := client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
	if errors.Is(err, api.ErrNoARI) {
		return nil, acme.ErrNoARI
	}
	if err != nil {
		return nil, fmt.Errorf("renewal info: %w", err)
	}
	return &acme.RenewalInfo{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End, RetryAfter: ri.RetryAfter,
		Explanation: ri.ExplanationURL}, nil
}

func (l *Issuer) forget(email string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.clients, email)
	if a := l.accts[email]; a != nil {
		a.Registration = nil
	}
}

// account returns the registered account for email.
func (l *Issuer) account(email string) (*account, error) {
	if _, err := l.client(email); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.accts[email]; a != nil && a.Registration != nil {
		return a, nil
	}
	return nil, fmt.Errorf("ACME account for %q is not registered", email)
}

// client returns the lego client of the account for email (registration
// and ARI), registering the account with the CA the first time.
func (l *Issuer) client(email string) (*lego.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[email]; c != nil {
		return c, nil
	}
	acct := l.accts[email]
	pushLocal := false // the cluster has no account: this host's registered one becomes it
	if acct == nil && l.cfg.Accounts != nil {
		// The cluster's account, if any, becomes this host's (its files
		// in the state volume), under the account's lock until it is
		// registered and saved for the others.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		unlock, err := l.cfg.Accounts.LockAccount(ctx, accountID(l.cfg.Directory, email))
		if err != nil {
			return nil, fmt.Errorf("ACME account: %w", err)
		}
		defer unlock()
		if pushLocal, err = l.pullAccount(ctx, email); err != nil {
			return nil, err
		}
	}
	if acct == nil {
		a, err := loadAccount(l.cfg.StateDir, l.cfg.Directory, email)
		if err != nil {
			return nil, err
		}
		acct = a
		l.accts[email] = a
		if pushLocal && a.Registration != nil {
			if err := l.pushAccount(a); err != nil {
				return nil, err
			}
		}
	}
	conf := lego.NewConfig(acct)
	conf.CADirURL = l.cfg.Directory
	conf.HTTPClient = l.http
	conf.UserAgent = "edgecert"
	client, err := lego.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("ACME directory %s: %w", l.cfg.Directory, err)
	}
	if acct.Registration == nil {
		var reg *registration.Resource
		if l.cfg.EABKid != "" {
			reg, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
				TermsOfServiceAgreed: true, Kid: l.cfg.EABKid, HmacEncoded: l.cfg.EABHMAC})
		} else {
			reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
		}
		if err != nil {
			return nil, fmt.Errorf("register ACME account at %s: %w", l.cfg.Directory, err)
		}
		acct.Registration = reg
		if err := acct.save(); err != nil {
			return nil, err
		}
		if l.cfg.Accounts != nil {
			if err := l.pushAccount(acct); err != nil {
				return nil, err
			}
		}
		l.log.Info("ACME account registered", "directory", l.cfg.Directory, "email", email, "account", reg.URI)
	}
	l.clients[email] = client
	return client, nil
}
