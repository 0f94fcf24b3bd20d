package legoissuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/miekg/dns"

	"github.com/edgecert/edgecert/acme"
)

// DNS-PERSIST-01 (draft-ietf-acme-dns-persist; CA/Browser Forum ballot
// SC-088): the operator sets one TXT record, once, at
// _validation-persist.<name>, naming the CA (an issuer domain name, as in
// CAA) and the ACME account, and every later order for the name is
// validated against it: no DNS credentials on the host. edgecert tells the
// operator the record (PersistRecords, `edgecert dns-record`), checks it
// through DNS before every order (checkPersist: a missing or wrong record
// costs no order and says what to set), then answers the challenge without
// touching DNS.
//
// The record's value is an RFC 8659 issue-value:
//
//	letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123; policy=wildcard
//
// policy=wildcard lets it validate the wildcard under the name too;
// persistUntil=<unix seconds>, when present, ends it.

// persistLabel is the label under which the record is set.
const persistLabel = "_validation-persist."

// PersistRecord is one TXT record DNS-PERSIST-01 needs.
type PersistRecord struct {
	Owner string `json:"owner"` // the record's name, without the final dot
	Value string `json:"value"` // the TXT record's text
	// Names are the certificate's names it validates.
	Names []string `json:"names"`
	// Problem is what DNS shows wrong with it now ("": in place).
	Problem string `json:"problem,omitempty"`
}

// String is the record as a line of a zone file.
func (r PersistRecord) String() string {
	return fmt.Sprintf("%s. IN TXT %q", r.Owner, r.Value)
}

// persistRecords are the records a certificate for domains needs: one per
// name, a wildcard's on its base name (one record serves both, with
// policy=wildcard), for the CA's issuer domain name and the account.
func persistRecords(domains []string, issuer, account string) []PersistRecord {
	var out []PersistRecord
	at := map[string]int{}
	for _, d := range domains {
		base, wild := strings.CutPrefix(d, "*.")
		i, ok := at[base]
		if !ok {
			i = len(out)
			at[base] = i
			out = append(out, PersistRecord{Owner: persistLabel + base})
		}
		out[i].Names = append(out[i].Names, d)
		v := issuer + "; accounturi=" + account
		if wild || strings.HasSuffix(out[i].Value, "; policy=wildcard") {
			v += "; policy=wildcard"
		}
		out[i].Value = v
	}
	return out
}

// issueValue is a TXT record's text read as an RFC 8659 issue-value.
type issueValue struct {
	issuer       string
	accountURI   string
	policy       string
	persistUntil time.Time
}

// parseIssueValue reads text; ok is false for a record of no issuer.
func parseIssueValue(text string) (v issueValue, ok bool, err error) {
	parts := strings.Split(text, ";")
	v.issuer = strings.ToLower(strings.Trim(parts[0], " \t"))
	if v.issuer == "" {
		return v, false, nil
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		tag, value, found := strings.Cut(strings.Trim(p, " \t"), "=")
		tag, value = strings.ToLower(strings.Trim(tag, " \t")), strings.Trim(value, " \t")
		switch {
		case !found || tag == "":
			return v, true, fmt.Errorf("parameter %q is not tag=value", strings.Trim(p, " \t"))
		case seen[tag]:
			return v, true, fmt.Errorf("parameter %q appears twice", tag)
		}
		seen[tag] = true
		for _, r := range value {
			if r < 0x21 || r > 0x7e || r == ';' {
				return v, true, fmt.Errorf("the value of %q has a character an issue-value may not hold", tag)
			}
		}
		switch tag {
		case "accounturi":
			v.accountURI = value
		case "policy":
			v.policy = strings.ToLower(value)
		case "persistuntil":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return v, true, fmt.Errorf("persistUntil %q is not a time in Unix seconds", value)
			}
			v.persistUntil = time.Unix(n, 0)
		}
	}
	return v, true, nil
}

// checkPersist says whether one of txts (the TXT records at the record's
// owner) lets the CA (known by issuers, its issuer domain names) validate
// the record's names for account now; if not, what is wrong, in the words
// an operator acts on.
func checkPersist(txts []string, issuers []string, want PersistRecord, account string, now time.Time) error {
	wildcard := slices.ContainsFunc(want.Names, func(n string) bool { return strings.HasPrefix(n, "*.") })
	var problems []string
	for _, t := range txts {
		v, ok, err := parseIssueValue(t)
		if !ok || !slices.ContainsFunc(issuers, func(i string) bool { return strings.EqualFold(i, v.issuer) }) {
			continue // another CA's, or not an issue-value
		}
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%q is malformed: %v", t, err))
		case v.accountURI == "":
			problems = append(problems, fmt.Sprintf("%q names no accounturi", t))
		case v.accountURI != account:
			problems = append(problems, fmt.Sprintf("%q names another account (this one is %s)", t, account))
		case wildcard && v.policy != "wildcard":
			problems = append(problems, fmt.Sprintf("%q lacks policy=wildcard, which %s needs", t, strings.Join(want.Names, ",")))
		case !v.persistUntil.IsZero() && !now.Before(v.persistUntil):
			problems = append(problems, fmt.Sprintf("%q expired at %s (persistUntil)", t, v.persistUntil.UTC().Format(time.RFC3339)))
		default:
			return nil
		}
	}
	if len(problems) == 0 {
		return fmt.Errorf("no TXT record for %s at %s", strings.Join(issuers, " or "), want.Owner)
	}
	return errors.New(strings.Join(problems, "; "))
}

// lookupTXT asks the resolvers (EDGECERT_DNS_RESOLVERS; the system's when
// none) for name's TXT records, the first that answers. A name that does
// not exist has none.
func lookupTXT(ctx context.Context, resolvers []string, name string) ([]string, error) {
	if len(resolvers) == 0 {
		txts, err := net.DefaultResolver.LookupTXT(ctx, name)
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil
		}
		return txts, err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.RecursionDesired = true
	c := &dns.Client{Timeout: 5 * time.Second}
	var lastErr error
	for _, ns := range dns01.ParseNameservers(resolvers) {
		r, _, err := c.ExchangeContext(ctx, m, ns)
		if err == nil && r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			err = fmt.Errorf("%s answered %s", ns, dns.RcodeToString[r.Rcode])
		}
		if err != nil {
			lastErr = err
			continue
		}
		var txts []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TXT); ok {
				txts = append(txts, strings.Join(t.Txt, ""))
			}
		}
		return txts, nil
	}
	return nil, fmt.Errorf("TXT %s: %w", name, lastErr)
}

// provePersist answers authz's DNS-PERSIST-01 challenge: the record is the
// operator's, checked before the order; nothing is written anywhere.
func (r *orderRun) provePersist(ctx context.Context, authz legoacme.Authorization) error {
	name := challenge.GetTargetedDomain(authz)
	for _, c := range authz.Challenges {
		if c.Type == acme.ChallengeDNSPersist {
			return withName(name, r.validate(ctx, c))
		}
	}
	return fmt.Errorf("%s: the CA offers no dns-persist-01 challenge for it", name)
}

// persistIssuers are the CA's issuer domain names (its directory's
// caaIdentities, which the challenge's issuer-domain-names repeat), the
// first the one a record names.
func persistIssuers(core *api.Core) ([]string, error) {
	ids := core.GetDirectory().Meta.CaaIdentities
	if len(ids) == 0 || ids[0] == "" {
		return nil, errors.New("the CA names no issuer domain (caaIdentities) in its directory: it cannot take dns-persist-01")
	}
	return ids, nil
}

// checkPersistRecords checks, through DNS, every record a DNS-PERSIST-01
// order for domains needs, before the order: a missing or wrong one is an
// error that says what to set, and no order is placed.
func (l *Issuer) checkPersistRecords(ctx context.Context, core *api.Core, domains []string, account string) error {
	issuers, err := persistIssuers(core)
	if err != nil {
		return &acme.OrderError{Err: err, Permanent: true, NotPlaced: true}
	}
	var bad []string
	for _, rec := range l.lookPersist(ctx, persistRecords(domains, issuers[0], account), issuers, account) {
		if rec.Problem != "" {
			bad = append(bad, fmt.Sprintf("%s: %s; set %s", strings.Join(rec.Names, ","), rec.Problem, rec))
		}
	}
	if len(bad) > 0 {
		return &acme.OrderError{Err: fmt.Errorf("dns-persist-01 record not in place (no order placed): %s", strings.Join(bad, "; ")), Config: true, NotPlaced: true}
	}
	return nil
}

// PersistRecords are the TXT records a certificate for domains needs for
// DNS-PERSIST-01 with the account of email ("": the default), registering
// the account if it has none yet, each with what DNS shows wrong with it
// now: what `edgecert dns-record` prints.
func (l *Issuer) PersistRecords(ctx context.Context, email string, domains []string) ([]PersistRecord, error) {
	acct, err := l.account(cmp.Or(email, l.cfg.Email))
	if err != nil {
		return nil, err
	}
	core, _, err := l.newCore(ctx, acct.Registration.URI, acct.key)
	if err != nil {
		return nil, err
	}
	issuers, err := persistIssuers(core)
	if err != nil {
		return nil, err
	}
	return l.lookPersist(ctx, persistRecords(domains, issuers[0], acct.Registration.URI), issuers, acct.Registration.URI), nil
}

// lookPersist looks each of recs up through DNS and says, in its Problem,
// what is wrong with it.
func (l *Issuer) lookPersist(ctx context.Context, recs []PersistRecord, issuers []string, account string) []PersistRecord {
	for i, rec := range recs {
		txts, err := lookupTXT(ctx, l.cfg.DNSResolvers, rec.Owner)
		if err == nil {
			err = checkPersist(txts, issuers, rec, account, time.Now())
		}
		if err != nil {
			recs[i].Problem = err.Error()
		}
	}
	return recs
}
