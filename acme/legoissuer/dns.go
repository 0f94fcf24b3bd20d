package legoissuer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/platform/config/env"
	"github.com/go-acme/lego/v4/providers/dns/httpreq"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
)

// DNS-01: lego's DNS providers put the TXT record in place (configured by
// lego's own environment variables, with their _FILE forms), lego's dns01
// package checks its propagation on the zone's authoritative servers
// (following a CNAME on _acme-challenge, as with acme-dns), and the
// challenge is posted and polled by this package, as for HTTP-01.

//go:generate go run ./internal/gendns

// dnsProviders are the DNS providers this build has, by lego's names. The
// default build (the Dockerfile's DNS_PROVIDERS=all, the Go build tag
// dnsall) adds every other of lego's providers (dns_all.go); a minimal
// build has these three, enough for a server of one's own (rfc2136) or a
// bridge to any API (exec, httpreq).
var dnsProviders = map[string]func() (challenge.Provider, error){
	"rfc2136": newRFC2136,
	"exec":    newExecProvider, // ours (execdns.go): lego's variables, a bounded run, a bare environment
	"httpreq": func() (challenge.Provider, error) { return httpreq.NewDNSProvider() },
}

// dnsBuild names the set of DNS providers linked: "all" or "minimal".
var dnsBuild = "minimal"

// newRFC2136 is lego's rfc2136 provider from its environment variables.
// lego v4.34 reads an unset RFC2136_ZONES as the zone "." (every update is
// then refused, NOTAUTH): without it, the configuration is read here and
// the zone found by asking the server, as lego means to.
func newRFC2136() (challenge.Provider, error) {
	// lego reads DNSUPDATE_* first and RFC2136_* after, each also from a _FILE.
	get := func(name string) string {
		return cmp.Or(env.GetOrFile(name), env.GetOrFile(strings.Replace(name, "DNSUPDATE_", "RFC2136_", 1)))
	}
	if strings.TrimSpace(get(rfc2136.EnvZones)) != "" {
		return rfc2136.NewDNSProvider()
	}
	cfg := rfc2136.NewDefaultConfig()
	if cfg.Nameserver = get(rfc2136.EnvNameserver); cfg.Nameserver == "" {
		return nil, fmt.Errorf("dnsupdate: some credentials information are missing: %s (or RFC2136_NAMESERVER)", rfc2136.EnvNameserver)
	}
	cfg.TSIGFile = get(rfc2136.EnvTSIGFile)
	cfg.TSIGKey = get(rfc2136.EnvTSIGKey)
	cfg.TSIGSecret = get(rfc2136.EnvTSIGSecret)
	cfg.TSIGGSSRealm = get(rfc2136.EnvTSIGGSSRealm)
	cfg.TSIGGSSUsername = get(rfc2136.EnvTSIGGSSUsername)
	cfg.TSIGGSSPassword = get(rfc2136.EnvTSIGGSSPassword)
	cfg.TSIGGSSKeytabFile = get(rfc2136.EnvTSIGGSSKeytabFile)
	return rfc2136.NewDNSProviderConfig(cfg)
}

// DNSProviderNames lists the DNS providers this build has.
func DNSProviderNames() []string {
	names := make([]string, 0, len(dnsProviders))
	for n := range dnsProviders {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DNSProvidersBuilt says which DNS providers this build has, for
// `edgecert version`.
func DNSProvidersBuilt() string {
	if dnsBuild == "all" {
		return fmt.Sprintf("all of lego %s's (%d names)", legoVersion, len(dnsProviders))
	}
	return strings.Join(DNSProviderNames(), ", ") + " (minimal build)"
}

// CheckDNSProvider tells whether this build has the DNS provider name; the
// error says why not: a name lego does not know, or one a minimal build
// left out.
func CheckDNSProvider(name string) error {
	if _, ok := dnsProviders[name]; ok {
		return nil
	}
	if slices.Contains(legoDNSProviders, name) {
		return fmt.Errorf("%q is one of lego's DNS providers, but this image was built with DNS_PROVIDERS=minimal (%s): build it with the default, DNS_PROVIDERS=all", name, strings.Join(DNSProviderNames(), ", "))
	}
	return fmt.Errorf("%q is not one of lego %s's DNS providers (their names: https://go-acme.github.io/lego/dns/)", name, legoVersion)
}

// newDNSProviders makes each named provider from its environment; an error
// names the provider and what lego found missing.
func newDNSProviders(names []string) (map[string]challenge.Provider, error) {
	out := map[string]challenge.Provider{}
	for _, n := range names {
		if err := CheckDNSProvider(n); err != nil {
			return nil, fmt.Errorf("EDGECERT_DNS_PROVIDER: %w", err)
		}
		p, err := dnsProviders[n]()
		if err != nil {
			return nil, fmt.Errorf("EDGECERT_DNS_PROVIDER: %s: %w", n, err)
		}
		out[n] = p
	}
	return out, nil
}

// DNSConfigID fingerprints the environment DNS providers read (every
// variable but edgecert's own and the process's), so that an order that
// failed on bad credentials is tried at once with new ones.
func DNSConfigID() string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "EDGECERT_") || k == "PATH" || k == "HOSTNAME" || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	slices.Sort(env)
	sum := sha256.Sum256([]byte(strings.Join(env, "\n")))
	return hex.EncodeToString(sum[:8])
}

// dnsError is a DNS provider's failure to put a record in place or remove
// it: edgecert's configuration (credentials, zone), not the CA.
type dnsError struct{ err error }

func (e dnsError) Error() string { return "DNS provider: " + e.err.Error() }
func (e dnsError) Unwrap() error { return e.err }

// proveDNS makes one authorization valid over DNS-01: the record is
// presented, its propagation checked (stopping when ctx ends), the
// challenge posted and polled, and the record removed in every case.
func (r *orderRun) proveDNS(ctx context.Context, authz legoacme.Authorization) error {
	name := challenge.GetTargetedDomain(authz)
	// Names that share a record (example.com and *.example.com both use
	// _acme-challenge.example.com, and providers replace the record's
	// values) are proven one after the other; the others at once.
	unlock := r.lockRecord(dns01.GetChallengeInfo(authz.Identifier.Value, "").EffectiveFQDN)
	defer unlock()
	validate := func(_ *api.Core, _ string, chal legoacme.Challenge) error { return r.validate(ctx, chal) }
	opts := append(slices.Clone(r.dnsOpts), dns01.WrapPreCheck(func(_, fqdn, value string, check dns01.PreCheckFunc) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		return check(fqdn, value)
	}))
	ch := dns01.NewChallenge(r.core, validate, boundProvider{ctx: ctx, p: r.dns}, opts...)
	if err := ch.PreSolve(authz); err != nil {
		return fmt.Errorf("%s: %w", name, dnsError{err})
	}
	defer func() {
		if err := ch.CleanUp(authz); err != nil {
			r.log("cannot remove the DNS-01 record", "domains", name, "err", err)
		}
	}()
	if err := ch.Solve(authz); err != nil {
		return withName(name, err)
	}
	return nil
}

// validate posts a challenge whose proof is in place and polls it until
// the CA has decided.
func (r *orderRun) validate(ctx context.Context, chal legoacme.Challenge) error {
	wait := pollFirst
	if chal.Status == legoacme.StatusPending {
		posted, err := r.core.Challenges.New(chal.URL)
		if err != nil {
			return fmt.Errorf("start validation: %w", err)
		}
		if done, err := challengeStatus(posted.Challenge); done || err != nil {
			return err
		}
		if ra, err := api.ParseRetryAfter(posted.RetryAfter); err == nil && ra > wait {
			wait = ra
		}
	}
	return poll(ctx, wait, func() (bool, error) {
		c, err := r.core.Challenges.Get(chal.URL)
		if err != nil {
			return false, fmt.Errorf("challenge: %w", err)
		}
		return challengeStatus(c.Challenge)
	})
}

func challengeStatus(c legoacme.Challenge) (bool, error) {
	switch c.Status {
	case legoacme.StatusValid:
		return true, nil
	case legoacme.StatusInvalid:
		if c.Error != nil {
			return false, c.Err()
		}
		return false, fmt.Errorf("the CA could not validate the %s challenge", c.Type)
	}
	return false, nil
}

// dnsOptions are the dns01 options from the configuration. By default the
// record's propagation is checked on the zone's authoritative servers (as
// its NS records name them); with resolvers, the zone is found and the
// record checked through those instead.
func dnsOptions(resolvers []string, timeout time.Duration) []dns01.ChallengeOption {
	var opts []dns01.ChallengeOption
	if len(resolvers) > 0 {
		opts = append(opts, dns01.AddRecursiveNameservers(dns01.ParseNameservers(resolvers)),
			dns01.DisableAuthoritativeNssPropagationRequirement())
	}
	if timeout > 0 {
		opts = append(opts, dns01.AddDNSTimeout(timeout))
	}
	return opts
}

// lockRecord serialises the proofs that use the DNS record fqdn.
func (r *orderRun) lockRecord(fqdn string) func() {
	r.recordsMu.Lock()
	if r.records == nil {
		r.records = map[string]*sync.Mutex{}
	}
	mu := r.records[fqdn]
	if mu == nil {
		mu = &sync.Mutex{}
		r.records[fqdn] = mu
	}
	r.recordsMu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// execSettings are the exec provider's own variables; every other EXEC_*
// variable is the program's, and may hold its credentials.
var execSettings = []string{"EXEC_PATH", "EXEC_MODE", "EXEC_PROPAGATION_TIMEOUT", "EXEC_POLLING_INTERVAL", "EXEC_SEQUENCE_INTERVAL"}

// DNSSecrets returns the secret values the named providers are configured
// with: the value of each variable lego documents as a credential or names
// like a secret, and the contents of its _FILE form (and for exec, every
// EXEC_* variable but its settings), for redaction.
func DNSSecrets(providers []string) []string {
	var out []string
	add := func(name string) {
		for _, v := range []string{os.Getenv(name), readFileVar(os.Getenv(name + "_FILE"))} {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	for _, p := range providers {
		for _, name := range legoDNSSecrets[p] {
			add(name)
			if after, ok := strings.CutPrefix(name, "DNSUPDATE_"); ok {
				add("RFC2136_" + after) // newRFC2136 reads both
			}
		}
		if p == "exec" {
			for _, kv := range os.Environ() {
				if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "EXEC_") && !slices.Contains(execSettings, strings.TrimSuffix(k, "_FILE")) {
					add(strings.TrimSuffix(k, "_FILE"))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// readFileVar is the contents of the file a _FILE variable names, or "".
func readFileVar(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
