package acme

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The decisions, as pure functions of a certificate's entry, the defaults
// and the clock, so that each rule is table-tested with a fixed time (as
// schedule.go's are). The loop in manager.go acts on what they say.

// defaults fill in what a Want leaves empty, and bound the unused grace.
type defaults struct {
	KeyType     string
	Profile     string
	UnusedGrace time.Duration
	Directory   string // the CA in use: a certificate from another is re-ordered
	DNSConfig   string // a fingerprint of the DNS providers' configuration
	// OrderTimeout: an order still running well past it is stuck (status,
	// health).
	OrderTimeout time.Duration
}

// stuckAfter is how long past OrderTimeout an order may still run (its
// finish after finalize, 2 min, and a margin) before it counts as stuck.
const stuckAfter = 3 * time.Minute

// orderStuck says why e's order in flight is stuck, or "".
func orderStuck(e *entry, d defaults, now time.Time) string {
	if !e.ordering || d.OrderTimeout <= 0 {
		return ""
	}
	if ran := now.Sub(e.orderStarted); ran > d.OrderTimeout+stuckAfter {
		return fmt.Sprintf("an order has run for %s, past EDGECERT_ORDER_TIMEOUT (%s): something it waits on ignores its deadline (see the log)",
			ran.Round(time.Second), d.OrderTimeout)
	}
	return ""
}

// inGrace says whether an unwanted certificate is still renewed.
func inGrace(e *entry, d defaults, now time.Time) bool {
	return e.want == nil && e.disk != nil && !e.disk.Placeholder && !e.st.UnusedSince.IsZero() &&
		now.Before(e.st.UnusedSince.Add(d.UnusedGrace))
}

// wish returns what to order for e now, and false if e is neither wanted
// nor in its grace period (then nothing is ordered for it).
func wish(e *entry, d defaults, now time.Time) (Order, bool) {
	switch {
	case e.want != nil:
		return Order{Domains: slices.Clone(e.want.Domains), KeyType: cmp.Or(e.want.KeyType, d.KeyType),
			Profile: cmp.Or(e.want.Profile, d.Profile), Email: e.want.Email, Challenge: e.want.Challenge, DNS: e.want.DNS, DNSConfig: dnsConfig(e.want.Challenge, d)}, true
	case inGrace(e, d, now):
		o := Order{Domains: slices.Clone(e.disk.Domains), KeyType: cmp.Or(e.disk.KeyType, d.KeyType), Profile: d.Profile}
		if e.st.Issued != nil {
			o.KeyType, o.Profile = cmp.Or(e.st.Issued.KeyType, o.KeyType), e.st.Issued.Profile
			o.Challenge, o.DNS, o.DNSConfig = e.st.Issued.Challenge, e.st.Issued.DNS, dnsConfig(e.st.Issued.Challenge, d)
		}
		return o, true
	}
	return Order{}, false
}

// needsOrder says whether the volume lacks a certificate that is right for
// o now: missing, placeholder, other names, key type, profile or CA, or due.
func needsOrder(e *entry, o Order, directory string, now time.Time) (bool, string) {
	switch {
	case e.disk == nil || e.disk.Placeholder:
		return true, "new certificate"
	case !SameNames(e.disk.Domains, o.Domains):
		return true, "domains changed"
	case e.st.Directory != "" && e.st.Directory != directory:
		return true, "CA directory changed"
	case e.disk.KeyType != "" && e.disk.KeyType != o.KeyType && e.st.Imported == "":
		return true, "key type changed"
	case e.st.Issued != nil && e.st.Issued.Profile != o.Profile:
		return true, "profile changed"
	}
	if at, src := e.renewal(); !now.Before(at) {
		return true, "due (" + string(src) + ")"
	}
	return false, ""
}

// orderNow says whether to order o for e (not ordering already) now, and
// why; when not, wake is when to ask again (zero: nothing is due). A take
// that failed waits for refreshAt, and wakes the loop then.
func orderNow(e *entry, o Order, directory string, now time.Time) (order bool, reason string, wake time.Time) {
	order, reason, wake = orderByNeed(e, o, directory, now)
	if !order && (e.refresh || e.refreshRollback) && now.Before(e.refreshAt) && (wake.IsZero() || e.refreshAt.Before(wake)) {
		wake = e.refreshAt
	}
	return order, reason, wake
}

func orderByNeed(e *entry, o Order, directory string, now time.Time) (order bool, reason string, wake time.Time) {
	takeDue := !now.Before(e.refreshAt)
	if now.Before(e.st.LimitedUntil) {
		return false, "", e.st.LimitedUntil // the CA's Retry-After holds every order, a changed wish's too
	}
	if now.Before(e.heldUntil) {
		return false, "", e.heldUntil // the issuer could not order a moment ago (ErrHeld)
	}
	if e.refreshRollback && takeDue {
		return true, reasonClusterRollback, time.Time{} // taken whatever this host's own hold
	}
	if e.force {
		return true, string(SourceForced), time.Time{}
	}
	if e.st.Hold != nil {
		return false, "", time.Time{} // rolled back: only `renew NAME` orders
	}
	if e.refresh && takeDue {
		return true, string(SourceCluster), time.Time{}
	}
	need, why := needsOrder(e, o, directory, now)
	retry := e.st.RetryAt
	if e.st.FailedSpec != specKey(o) {
		retry = time.Time{} // a changed wish is tried at once...
	}
	if need && wishChanged(e, o, why) {
		// ...the first time: a wish that keeps changing (labels flipped
		// back and forth) is ordered less and less often.
		if recent := within(e.st.WishOrders, now, flapWindow); len(recent) > 0 {
			retry = later(retry, recent[len(recent)-1].Add(orderBackoff[min(len(recent), len(orderBackoff))-1]))
		}
	}
	switch {
	case need && !now.Before(retry):
		return true, why, time.Time{}
	case need:
		return false, "", retry
	case e.disk != nil && !e.disk.Placeholder:
		at, _ := e.renewal()
		return false, "", at
	}
	return false, "", time.Time{}
}

// boundElsewhere says why w may not take e's name, or "": a name stays
// bound to the names of the certificate its files hold while they are used
// or in their unused grace, so that a container that starts while the
// owner is away (a redeploy) cannot take it over with other names and have
// the owner's server block serve them. A wish that shares a name with the
// certificate is its owner's (adding or dropping a name is fine); the
// operator releases a name with `edgecert forget`.
func boundElsewhere(e *entry, w Want, d defaults, now time.Time) string {
	if e.disk == nil || e.disk.Placeholder || e.st.Released ||
		slices.ContainsFunc(w.Domains, func(n string) bool { return slices.Contains(e.disk.Domains, n) }) {
		return ""
	}
	if e.want == nil && !e.st.UnusedSince.IsZero() && !inGrace(e, d, now) {
		return "" // unused past its grace: the name is free again
	}
	return fmt.Sprintf("certificate name %q holds a certificate for %s; this container asks for %s, which shares no name with it: give it another name, or release the name with `edgecert forget %s`",
		e.name, strings.Join(e.disk.Domains, ","), strings.Join(w.Domains, ","), e.name)
}

// flapWindow is how far back orders for a changed wish count, and
// forcedWindow how far back forced ones do.
const (
	flapWindow   = 24 * time.Hour
	forcedWindow = 7 * 24 * time.Hour
)

// wishChanged says whether an order for o, needed for reason, is there
// because the wish changed: other names, key type, profile or CA, or a wish
// other than the one that last failed.
func wishChanged(e *entry, o Order, reason string) bool {
	switch reason {
	case "domains changed", "key type changed", "profile changed", "CA directory changed":
		return true
	}
	return e.st.FailedSpec != "" && e.st.FailedSpec != specKey(o)
}

// within returns the times of ts no older than window before now, oldest first.
func within(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	var out []time.Time
	for _, t := range ts {
		if now.Sub(t) < window {
			out = append(out, t)
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// replaces returns the certificate an order for e replaces by ARI's rules
// (exempt from rate limits): the current one when the CA knows it (same CA,
// answered ARI) and the order shares a name with it; nil otherwise.
func replaces(e *entry, o Order, directory string) *Info {
	if e.disk != nil && !e.disk.Placeholder && e.st.ARI != nil && e.disk.Leaf != nil &&
		(e.st.Directory == "" || e.st.Directory == directory) &&
		slices.ContainsFunc(o.Domains, func(d string) bool { return slices.Contains(e.disk.Domains, d) }) {
		return e.disk
	}
	return nil
}

// specKey identifies what an order asks for, to tell a changed wish from a
// retry of the same one.
func specKey(o Order) string {
	d := slices.Clone(o.Domains)
	slices.Sort(d)
	return strings.Join(d, ",") + "|" + o.KeyType + "|" + o.Profile + "|" + o.Challenge + "|" + o.DNS + "|" + o.DNSConfig
}

// dnsConfig is the DNS configuration's fingerprint for a DNS-01 order, so
// that an order that failed on it is tried at once when it changes.
func dnsConfig(challenge string, d defaults) string {
	if challenge != ChallengeDNS {
		return ""
	}
	return d.DNSConfig
}

// SameNames says whether a and b hold the same names, whatever their order.
func SameNames(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// renewal says when e's current certificate is due and why.
func (e *entry) renewal() (time.Time, Source) {
	return renewalTime(e.disk.NotBefore, e.disk.NotAfter, e.st.ARI)
}

// offerNewer says whether a certificate the issuer offers (another host of
// the cluster stored it) is worth a take-only order: the volume holds none,
// or an older one. The issuer applies the full rule when it is asked.
func offerNewer(disk *Info, o Offered) bool {
	return disk == nil || disk.Placeholder || (disk.Serial != o.Serial && o.NotAfter.After(disk.NotAfter))
}
