// Package acme owns the certificate lifecycle: which certificates are
// wanted, what is on the volume, when to order (ARI first, lifetime ratio as
// backstop), retries that survive restarts, and handing each new pair to a
// Deployer. It knows nothing of Docker or nginx, and nothing of lego: the CA
// is reached through the small issuer interface, which acme/legoissuer
// implements.
//
// Where things are:
//
//	acme.go      this file: what goes in and out (Want, Order, Deployment, the interfaces)
//	manager.go   the Manager and its loop: the only code that changes certificate state
//	wants.go     the wanted set against the certificates known; loading an entry; refused wishes
//	workers.go   the goroutines the loop starts: order, deploy, ARI poll
//	results.go   what the loop does with a finished order, deployment or ARI answer
//	decide.go    pure decisions: what to order for a certificate, and whether now
//	schedule.go  pure schedule: renewal time (ARI, ratio, emergency), retry backoff
//	state.go     what survives a restart: per-certificate state and history
//	renew.go     renew requests from the operator, and dry runs
//	rollback.go  the operator's rollback and its hold; shared with the cluster
//	waiters.go   renew requests waiting for an order or a deployment
//	status.go    the status view of a certificate
//	store.go     the certificate volume: atomic pair writes, placeholders, links
//	versions.go  the versions kept for rollback, and their pruning
//	repair.go    leftovers of an interrupted write; a damaged current version
//	pem.go       what a PEM chain says of itself; the self-signed placeholder
package acme

import (
	"context"
	"crypto/x509"
	"errors"
	"time"
)

// KeyTypes are the key types edgecert orders, as labels and environment
// variables name them. The first is the default.
var KeyTypes = []string{"ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"}

// Want is one certificate that running containers ask for. Empty options
// take the configured defaults.
type Want struct {
	Name       string
	Domains    []string
	Containers []string
	KeyType    string
	Profile    string
	Email      string
	Group      string // passed on to the Deployer: which proxies serve it
	// CombinedPEM: a proxy that serves it wants combined.pem (HAProxy).
	CombinedPEM bool
	Challenge   string // "" (HTTP-01), ChallengeDNS or ChallengeDNSPersist
	DNS         string // DNS-01: the provider
}

// The challenges besides HTTP-01 (""): DNS-01 through a DNS provider, and
// DNS-PERSIST-01, a TXT record the operator sets once.
const (
	ChallengeDNS        = "dns-01"
	ChallengeDNSPersist = "dns-persist-01"
)

// Order is one certificate to obtain. Empty options take the issuer's defaults.
type Order struct {
	Domains  []string
	KeyType  string
	Profile  string
	Email    string
	Replaces *x509.Certificate // the certificate this order replaces (RFC 9773), or nil
	Key      []byte            // PEM private key to reuse when it is of KeyType; a new key otherwise
	// Challenge: "" for HTTP-01, ChallengeDNS for DNS-01 through the DNS
	// provider named DNS, ChallengeDNSPersist for DNS-PERSIST-01.
	Challenge string
	DNS       string
	DNSConfig string // a fingerprint of the DNS configuration (not sent anywhere)
	// Forced: an operator asked for it (renew --force): past any retry wait.
	Forced bool
	// Current is the certificate this host serves for the name now (from
	// any CA, with or without ARI), or nil. An issuer that can hand over a
	// certificate it already has (the cluster) hands over only one newer
	// than Current: a due or forced renewal never "succeeds" by returning
	// the certificate it was asked to renew.
	Current *x509.Certificate
	// Asked is when the order was asked for. A forced order takes a
	// certificate the issuer already has only when it was stored after
	// Asked: `renew --force` after a rollback orders, and never puts back
	// the certificate the operator rolled back from.
	Asked time.Time
	// TakeOnly: the issuer said it has a newer certificate (another host
	// ordered it); hand it over, or fail with ErrNothingNewer, and never
	// order.
	TakeOnly bool
	// Rollback (with TakeOnly): take the certificate an operator rolled
	// back to on another host, although it is older than the current one.
	Rollback bool
}

// ErrHeld is wrapped by an issuer's error that means it cannot order now
// for a reason outside the order (the cluster unreachable): not a failure
// of the order; the need is kept and ordered when the hold clears.
var ErrHeld = errors.New("orders wait")

// ErrNothingNewer is an issuer's answer to a TakeOnly order when it has no
// certificate newer than the current one: nothing to do, not a failure.
var ErrNothingNewer = errors.New("the issuer has no certificate newer than the current one")

// OrderError is a failed order, classified for the retry schedule.
type OrderError struct {
	Err       error
	Permanent bool // retrying soon will not help (a rejected name or profile)
	// Config: edgecert's own configuration failed (a DNS provider refused
	// its credentials): retried on the slow schedule, at once after a
	// restart with another configuration.
	Config bool
	// NotPlaced: nothing was asked of the CA (a record edgecert checks
	// before ordering is missing): a retry costs the CA nothing, so it
	// comes every 10 minutes at most.
	NotPlaced  bool
	RetryAfter time.Duration // the CA's Retry-After, 0 if none
}

func (e *OrderError) Error() string { return e.Err.Error() }
func (e *OrderError) Unwrap() error { return e.Err }

// RenewalInfo is the CA's ARI answer for one certificate.
type RenewalInfo struct {
	Start, End  time.Time
	RetryAfter  time.Duration
	Explanation string
}

// ErrNoARI means the CA offers no renewal information.
var ErrNoARI = errors.New("the CA offers no renewal information (ARI)")

// issuer talks to the CA. Obtain returns the PEM chain (leaf first) and key;
// its errors may be *OrderError. RenewalInfo returns ErrNoARI when the CA
// offers none.
type issuer interface {
	Obtain(ctx context.Context, o Order) (chain, key []byte, err error)
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*RenewalInfo, error)
}

// preflighter checks, before an order, that the CA will be able to validate
// domains (for HTTP-01: a proxy serves the webroot's challenge directory).
type preflighter interface {
	Preflight(ctx context.Context, domains []string) error
}

// Deployment is a certificate that has just become current on the volume.
type Deployment struct {
	Name        string
	Group       string
	Domains     []string
	Serial      string
	Fingerprint string    // SHA-256 of the leaf, hex
	Written     time.Time // when it became current on the volume
	// KeyAlg lets a proof tell another version of it (the same names and
	// key algorithm) from another certificate.
	KeyAlg x509.PublicKeyAlgorithm
	// More says other certificates are about to be handed over (orders in
	// flight, or deployments started together): a deployer may wait for
	// them, briefly, to reload each proxy once.
	More bool
}

// ErrUnserved is what a Deployer's error is (errors.Is) when every proxy
// that did not prove the certificate answers for its names with another
// certificate (it has no server for them): a matter of the proxies'
// configuration that no retry mends. The certificate then shows the error
// as a hint, not a failure, and is checked again when a proxy next proves
// another certificate, on `renew NAME`, and hourly.
var ErrUnserved = errors.New("no proxy serves the certificate's names")

// Deployer makes the proxies serve a certificate and proves that they do.
// It is called again (with backoff) until it returns nil.
type Deployer interface {
	Deploy(ctx context.Context, d Deployment) error
}

// EventSink hears about every history event as it happens (notifications,
// metrics). It is called from the Manager's loop with its lock held: it must
// not block or call back into the Manager.
type EventSink interface {
	CertEvent(name string, e Event, s CertStatus)
}

// RenewResult is the outcome of one renew request.
type RenewResult struct {
	Name     string    `json:"name"`
	Ordered  bool      `json:"ordered"`
	DryRun   bool      `json:"dry_run,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Message  string    `json:"message"`
	Err      string    `json:"error,omitempty"`
}
