package signal

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// The proof: TLS handshakes that show whether a proxy serves a certificate.
// What a handshake presents says one of four things of the certificate
// being proven: served; what the volume holds now for its name (a later
// deployment overtook this one: served too); another version of it (the
// proxy has not loaded it yet: wait; after a rollback the newer one is such
// a version); or another certificate altogether (the proxy has no server for
// the name, so its default server answers, or another certificate covers
// it).
// Waiting cannot change the last, so it is answered within otherGrace, as a
// hint for the operator, and never holds up the other certificates.

// shown is the leaf a handshake presented.
type shown struct {
	Fingerprint string // SHA-256, hex
	Serial      string // hex
	Names       []string
	KeyAlg      x509.PublicKeyAlgorithm
	leaf        *x509.Certificate
}

// verdict is what a handshake says of the certificate being proven.
type verdict int

const (
	isServed   verdict = iota // the very leaf
	isNewer                   // what the volume holds now for its name: a later deployment's, served
	isOlder                   // another version of it: the proxy has not loaded this one yet
	isNoServer                // a leaf that does not cover the name: the proxy has no server for it
	isOther                   // another certificate that covers the name
)

// judge is what seeing s, for sni, says of c, when current is the
// fingerprint the volume holds now for c's name ("" if unknown). A version
// of c has c's names (in any order and case) and key algorithm. Dates do
// not tell which version should be served (a rollback puts an older one
// back; two renewals in one second carry the same): the volume does.
func judge(c Cert, sni string, s shown, current string) verdict {
	switch {
	case s.Fingerprint == c.Fingerprint:
		return isServed
	case current != "" && s.Fingerprint == current:
		return isNewer
	case sameNames(s.Names, c.Domains) && (c.KeyAlg == x509.UnknownPublicKeyAlgorithm || c.KeyAlg == s.KeyAlg):
		return isOlder
	case s.leaf == nil || s.leaf.VerifyHostname(sni) != nil:
		return isNoServer
	default:
		return isOther
	}
}

func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	norm := func(s []string) []string {
		out := make([]string, len(s))
		for i, x := range s {
			out[i] = strings.ToLower(x)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

// otherGrace is how long a handshake must go on presenting another
// certificate before the proof gives up on it: the workers of the old
// configuration may still answer for a moment after a reload.
const otherGrace = time.Second

// describe names a leaf for a person: its names and serial.
func (s shown) describe() string {
	what := strings.Join(s.Names, ",")
	if what == "" && s.leaf != nil {
		what = "CN=" + s.leaf.Subject.CommonName
	}
	if len(what) > 120 {
		what = what[:120] + "…"
	}
	return fmt.Sprintf("a certificate for %s (serial %s)", what, s.Serial)
}

// unservedHint is what status says of a name a proxy answers with another
// certificate.
func unservedHint(proxy, sni string, v verdict, s shown) string {
	if v == isNoServer {
		return fmt.Sprintf("%s has no server for %s, or its server block for it names another certificate's files: it presented %s; add or fix the server block for %s, or give the certificate the proxy group that serves it",
			proxy, sni, s.describe(), sni)
	}
	return fmt.Sprintf("%s serves %s with another certificate: %s", proxy, sni, s.describe())
}

// NoServerError says a proxy answers for a certificate's name with another
// certificate (it has no server for it): a matter of its configuration,
// which no reload mends.
type NoServerError struct{ Hint string }

func (e NoServerError) Error() string { return e.Hint }

// Is makes errors.Is(err, ErrNoServer) hold.
func (e NoServerError) Is(target error) bool { return target == ErrNoServer }

// ErrNoServer is the class of NoServerError.
var ErrNoServer = errors.New("the proxy serves another certificate for the name")

// look is one handshake's answer for c on addr: its verdict and the leaf,
// or the connection's error.
type look struct {
	v   verdict
	s   shown
	sni string
	err error
}

// lookAt handshakes with every proof name of c on each of addrs, and
// returns the first answer that is not "served" (or served, if all are):
// the address whose answers are all served wins.
func lookAt(ctx context.Context, addrs []string, c Cert, current func(string) string) look {
	var worst look
	for i, addr := range addrs {
		got := look{v: isServed}
		for _, d := range proofNames(c.Domains) {
			s, err := present(ctx, addressFor(addrs, addr, d), d)
			if err != nil {
				got = look{err: err, sni: d}
				break
			}
			cur := ""
			if s.Fingerprint != c.Fingerprint && current != nil {
				cur = current(c.Name)
			}
			v := judge(c, d, s, cur)
			if v == isNewer {
				got = look{v: v, s: s, sni: d}
				continue
			}
			if v != isServed {
				got = look{v: v, s: s, sni: d}
				break
			}
		}
		if got.err == nil && (got.v == isServed || got.v == isNewer) {
			return got
		}
		if i == 0 || worst.err != nil && got.err == nil {
			worst = got // a leaf presented says more than a failed connection
		}
	}
	return worst
}

// addressFor is where the handshake for proof name d goes: to d itself when
// d is one of the proxy's own addresses (a certificate for an IP address
// is proven as a client reaching that address sees it: no SNI, the
// listener's default server), to addr otherwise.
func addressFor(addrs []string, addr, d string) string {
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err == nil && host == d {
			return a
		}
	}
	return addr
}

// err is l as the error of a proof that did not succeed.
func (l look) error(addrs []string, c Cert) error {
	if l.err != nil {
		return l.err
	}
	return wrongLeafError(fmt.Sprintf("%s with SNI %s presents serial %s, want %s", strings.Join(addrs, ","), l.sni, l.s.Serial, c.Serial))
}

// wrongLeafError is a handshake that presented another certificate: what
// status should name, rather than a connection that failed later.
type wrongLeafError string

func (e wrongLeafError) Error() string { return string(e) }

// handshakes is how many handshakes one proof makes at once.
const handshakes = 8

// lookEach looks, all at once (handshakes at a time), at each certificate
// of cs on addrs.
func lookEach(ctx context.Context, addrs []string, cs []Cert, current func(string) string) []look {
	out := make([]look, len(cs))
	sem := make(chan struct{}, handshakes)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = lookAt(ctx, addrs, c, current)
		}()
	}
	wg.Wait()
	return out
}

// allServed says whether every certificate of cs is served on addrs now.
func allServed(ctx context.Context, addrs []string, cs []Cert, current func(string) string) bool {
	for _, l := range lookEach(ctx, addrs, cs, current) {
		if l.err != nil || l.v != isServed && l.v != isNewer {
			return false
		}
	}
	return true
}

// prove looks at every certificate of cs on addrs, in rounds a few
// milliseconds apart spacing out to 100 ms, until each is served, or is
// answered with another certificate for otherGrace (unserved: a hint), or
// ctx ends (not served: an error). One that is not served never uses up
// the time of the others. It records a handshake step for each.
func prove(ctx context.Context, proxy string, addrs []string, cs []Cert, timeout time.Duration, current func(string) string, rep *Report) {
	start := time.Now()
	pending := slices.Clone(cs)
	last := map[string]look{}
	otherSince := map[string]time.Time{}
	wait := 2 * time.Millisecond
	for {
		looks := lookEach(ctx, addrs, pending, current)
		var still []Cert
		for i, c := range pending {
			l := looks[i]
			switch {
			case l.err == nil && (l.v == isServed || l.v == isNewer):
				detail := c.Name + ": serial " + c.Serial
				if l.v == isNewer {
					detail = c.Name + ": a newer version, serial " + l.s.Serial + " (this deployment's was " + c.Serial + ")"
				}
				rep.Steps = append(rep.Steps, Step{Step: "handshake", OK: true, TookMS: time.Since(start).Milliseconds(), Detail: detail})
				continue
			case l.err == nil && (l.v == isNoServer || l.v == isOther):
				if otherSince[c.Name].IsZero() {
					otherSince[c.Name] = time.Now()
				}
				if time.Since(otherSince[c.Name]) >= otherGrace {
					hint := unservedHint(proxy, l.sni, l.v, l.s)
					rep.Steps = append(rep.Steps, Step{Step: "handshake", TookMS: time.Since(start).Milliseconds(), Detail: c.Name + ": " + hint})
					if rep.Unserved == nil {
						rep.Unserved = map[string]string{}
					}
					rep.Unserved[c.Name] = hint
					continue
				}
			default:
				delete(otherSince, c.Name)
			}
			prev, seen := last[c.Name]
			switch {
			case !seen:
				last[c.Name] = l
			case prev.err == nil && l.err != nil:
				// Another certificate presented says more than a
				// connection that failed afterwards.
			case ctx.Err() == nil:
				last[c.Name] = l // a look cut short by the deadline says less than the one before
			}
			still = append(still, c)
		}
		pending = still
		if len(pending) == 0 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	for _, c := range pending {
		err := last[c.Name].error(addrs, c)
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		rep.Steps = append(rep.Steps, Step{Step: "handshake", TookMS: time.Since(start).Milliseconds(), Detail: c.Name + ": " + err.Error()})
		if rep.CertErrors == nil {
			rep.CertErrors = map[string]string{}
		}
		rep.CertErrors[c.Name] = fmt.Sprintf("%s: %s: %s", ErrNotServed, proxy, err)
	}
}

// Served returns the SHA-256 fingerprint (hex) and serial of the leaf that
// addr presents for sni.
func Served(ctx context.Context, addr, sni string) (fingerprint, serial string, err error) {
	s, err := present(ctx, addr, sni)
	return s.Fingerprint, s.Serial, err
}

// present is the leaf addr presents for sni. The handshake does not verify
// the chain: the proof compares the exact leaf, a stronger check. An IP
// address as sni sends no SNI (crypto/tls never sends an address), as a
// client that reaches the proxy by its address does: the proxy answers
// with its default server's certificate. It offers the classic groups
// first (a proof carries no secret, and a post-quantum key share is a
// large part of the client's work: a restart makes a thousand handshakes),
// and the default ones when the proxy refuses those.
func present(ctx context.Context, addr, sni string) (shown, error) {
	s, err := handshake(ctx, addr, sni, classicGroups)
	var refused *net.OpError // the proxy's alert: crypto/tls reports it so
	if errors.As(err, &refused) && refused.Op == "remote error" && ctx.Err() == nil {
		s, err = handshake(ctx, addr, sni, nil)
	}
	return s, err
}

// classicGroups are the key exchanges a proof offers first.
var classicGroups = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}

// errSeen ends a proof's handshake once the proxy's certificate is read:
// what the proxy presents is all a proof looks at, and the rest of the
// handshake (its signature checked, the keys agreed, Finished) is half the
// client's work. The proxy sees the client end the handshake (an alert
// nginx logs at the info level only); it had loaded the key with the
// certificate (its config test checks that they fit).
var errSeen = errors.New("certificate seen")

// handshake is one handshake with addr for sni, offering groups (nil:
// crypto/tls's defaults), up to the proxy's certificate.
func handshake(ctx context.Context, addr, sni string, groups []tls.CurveID) (shown, error) {
	var seen shown
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second},
		Config: &tls.Config{ServerName: sni, InsecureSkipVerify: true, CurvePreferences: groups, //nolint:gosec // the leaf is compared byte for byte
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return fmt.Errorf("%s presented no certificate", addr)
				}
				seen = shownOf(cs.PeerCertificates[0])
				return errSeen
			}}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if errors.Is(err, errSeen) {
		return seen, nil
	}
	if err == nil {
		conn.Close()
		err = fmt.Errorf("%s completed a handshake without a certificate", addr)
	}
	return shown{}, err
}

// shownOf is what a leaf shows: its names are its DNS names and then its IP
// addresses (as edgecert's labels write them).
func shownOf(leaf *x509.Certificate) shown {
	sum := sha256.Sum256(leaf.Raw)
	names := slices.Clip(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return shown{Fingerprint: hex.EncodeToString(sum[:]), Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()),
		Names: names, KeyAlg: leaf.PublicKeyAlgorithm, leaf: leaf}
}

// proofNames are the names a proof handshakes with: a certificate's names
// but its wildcards (a wildcard is not a name a client sends; the names
// beside it are in the same pair), or, for a certificate of wildcards only,
// a name under each ("edgecert-proof.example.com", which nginx's
// server_name *.example.com matches).
func proofNames(domains []string) []string {
	var plain, under []string
	for _, d := range domains {
		if base, ok := strings.CutPrefix(d, "*."); ok {
			under = append(under, "edgecert-proof."+base)
		} else {
			plain = append(plain, d)
		}
	}
	if len(plain) > 0 {
		return plain
	}
	return under
}
