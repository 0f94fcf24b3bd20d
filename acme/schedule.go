package acme

import (
	"math/rand/v2"
	"time"
)

// The renewal schedule, as pure functions of the clock, so that every rule
// is tested with a fixed time.

// Source says why a certificate renews when it does, as status shows it.
type Source string

// Renewal time sources.
const (
	SourceARI       Source = "ari"       // inside the CA's suggested window (RFC 9773)
	SourceRatio     Source = "ratio"     // a third of the lifetime left (half under 10 days)
	SourceEmergency Source = "emergency" // under 1/20 of the lifetime left: now, whatever ARI says
	SourceForced    Source = "forced"    // an operator asked
	SourceCluster   Source = "cluster"   // another host of the cluster has a newer certificate
	SourceRetry     Source = "retry"     // a failed order's backoff
)

// ARIWindow is the CA's renewal suggestion for one certificate.
type ARIWindow struct {
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Chosen      time.Time `json:"chosen"` // one random time in [Start, End), picked once per window
	Explanation string    `json:"explanation,omitempty"`
	FetchedAt   time.Time `json:"fetched_at"`
}

// ARI polling intervals: at least twice a day, and a server's Retry-After
// is honoured within [ariMinPoll, ariMaxPoll].
const (
	ariDefaultPoll = 12 * time.Hour
	ariMinPoll     = time.Minute
	ariMaxPoll     = 24 * time.Hour
	ariErrorPoll   = time.Hour
)

// RenewAt is when a certificate with this validity is due without ARI: when
// a third of its lifetime remains, or half of it for lifetimes under 10 days.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	if life < 10*24*time.Hour {
		return notBefore.Add(life / 2)
	}
	return notBefore.Add(life * 2 / 3)
}

// emergencyAt is when less than 1/20 of the lifetime remains.
func emergencyAt(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 20)
}

// renewalTime says when a certificate should be renewed and why: the CA's
// window when there is one, the lifetime ratio otherwise, and never later
// than the emergency threshold.
func renewalTime(notBefore, notAfter time.Time, ari *ARIWindow) (time.Time, Source) {
	t, src := RenewAt(notBefore, notAfter), SourceRatio
	if ari != nil && !ari.Chosen.IsZero() {
		t, src = ari.Chosen, SourceARI
	}
	if em := emergencyAt(notBefore, notAfter); t.After(em) {
		t, src = em, SourceEmergency
	}
	return t, src
}

// chooseInWindow keeps prev's choice if the window is unchanged, and
// otherwise picks a uniformly random time in [start, end): RFC 9773 §4.2
// spreads clients over the window so they do not all come at once. The pick
// stays inside the window but leaves room for a retry when the window
// reaches towards expiry: no later than 9/10 of the lifetime, and for
// lifetimes under 10 days no later than half of it (the ratio backstop).
func chooseInWindow(prev *ARIWindow, start, end, notBefore, notAfter time.Time, rnd func(int64) int64) time.Time {
	if prev != nil && prev.Start.Equal(start) && prev.End.Equal(end) && !prev.Chosen.IsZero() {
		return prev.Chosen
	}
	life := notAfter.Sub(notBefore)
	latest := notAfter.Add(-life / 10)
	if life < 10*24*time.Hour {
		latest = RenewAt(notBefore, notAfter)
	}
	if end.After(latest) && latest.After(start) {
		end = latest
	}
	if !end.After(start) {
		return start
	}
	return start.Add(time.Duration(rnd(int64(end.Sub(start)))))
}

// nextARIPoll is when to ask the CA again, given its Retry-After (0: none).
func nextARIPoll(now time.Time, retryAfter time.Duration) time.Time {
	if retryAfter <= 0 {
		return now.Add(ariDefaultPoll)
	}
	return now.Add(min(max(retryAfter, ariMinPoll), ariMaxPoll))
}

// orderBackoff is Let's Encrypt's advice for retrying a failed order.
var orderBackoff = []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour}

// retrySteps is the step of orderBackoff a failure takes, failures
// counting it. Credentials do not mend by themselves: a failure of
// edgecert's own configuration skips the first minute (10 min, 100 min,
// then daily; a new configuration, edgecert recreated, is a new wish, tried
// at once). One that asked nothing of the CA (a record checked before
// ordering is missing) waits 10 minutes at most: its retry costs nothing.
func retrySteps(failures int, config, notPlaced bool) int {
	steps := failures
	if config {
		steps++
	}
	if notPlaced {
		steps = min(steps, 2)
	}
	return steps
}

// retryAt is when to try a failed order again: the CA's Retry-After when it
// sent one (at least a minute), a day for a permanent error, and otherwise
// the backoff table with ±10% jitter. failures counts this failure too.
func retryAt(now time.Time, failures int, retryAfter time.Duration, permanent bool, rnd func() float64) time.Time {
	switch {
	case retryAfter > 0:
		return now.Add(max(retryAfter, time.Minute))
	case permanent:
		return now.Add(24 * time.Hour)
	}
	d := orderBackoff[min(max(failures-1, 0), len(orderBackoff)-1)]
	return now.Add(d + time.Duration((rnd()*0.2-0.1)*float64(d)))
}

func randInt63n(n int64) int64 { return rand.Int64N(n) }
