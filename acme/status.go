package acme

import (
	"cmp"
	"slices"
	"time"
)

// State is a certificate's condition, as status shows it.
type State string

// The states of a certificate.
const (
	StatePending     State = "pending"     // wanted, nothing on the volume yet
	StatePlaceholder State = "placeholder" // a self-signed stand-in is on the volume
	StateValid       State = "valid"
	StateRenewing    State = "renewing" // an order is in flight
	StateFailing     State = "failing"  // the last order or deployment failed
	StateUnused      State = "unused"   // no running container wants it; files kept
)

// Phase is what an order in flight is doing.
type Phase string

// The phases of an order.
const (
	PhasePreflight Phase = "preflight" // checking that the proxy serves the challenge directory
	PhaseOrdering  Phase = "ordering"  // at the CA
	PhaseWriting   Phase = "writing"   // writing the pair to the volume
)

// CertStatus is one certificate as `edgecert status --json` shows it.
type CertStatus struct {
	Name        string     `json:"name"`
	Domains     []string   `json:"domains"`
	State       State      `json:"state"`
	Containers  []string   `json:"containers"`
	KeyType     string     `json:"key_type,omitempty"`
	Profile     string     `json:"profile,omitempty"`
	Challenge   string     `json:"challenge,omitempty"`    // http-01 or dns-01
	DNSProvider string     `json:"dns_provider,omitempty"` // dns-01: the provider
	Serial      string     `json:"serial,omitempty"`
	Issuer      string     `json:"issuer,omitempty"`
	NotBefore   time.Time  `json:"not_before,omitzero"`
	NotAfter    time.Time  `json:"not_after,omitzero"`
	RenewAt     time.Time  `json:"renew_at,omitzero"`
	RenewSource Source     `json:"renew_source,omitempty"` // ari, ratio, emergency, forced, retry; while ordering, the order's reason
	ARI         *ARIWindow `json:"ari,omitempty"`
	ARIError    string     `json:"ari_error,omitempty"`
	LastAttempt time.Time  `json:"last_attempt,omitzero"`
	LastSuccess time.Time  `json:"last_success,omitzero"`
	LastError   string     `json:"last_error,omitempty"`
	Permanent   bool       `json:"permanent_error,omitempty"`
	Failures    int        `json:"failures,omitempty"`
	NextRetry   time.Time  `json:"next_retry,omitzero"`
	UnusedSince time.Time  `json:"unused_since,omitzero"`
	RenewedTill time.Time  `json:"renewed_until,omitzero"` // unused: renewals stop then
	Deployed    bool       `json:"deployed"`
	LastDeploy  time.Time  `json:"last_deploy,omitzero"`
	DeployError string     `json:"deploy_error,omitempty"`
	Hint        string     `json:"hint,omitempty"`        // a proxy answers for its names with another certificate
	Waiting     string     `json:"waiting,omitempty"`     // why a due order has not started
	Held        *Hold      `json:"held,omitempty"`        // rolled back: no automatic renewal until `renew NAME`
	Phase       Phase      `json:"phase,omitempty"`       // the order in flight
	OrderStuck  string     `json:"order_stuck,omitempty"` // the order in flight has run past EDGECERT_ORDER_TIMEOUT
	History     []Event    `json:"history"`               // newest last
}

// describe is e as status shows it; hold is why due orders wait ("" if
// they need not).
func describe(e *entry, d defaults, hold string, now time.Time) CertStatus {
	s := CertStatus{Name: e.name, LastAttempt: e.st.LastAttempt, LastSuccess: e.st.LastSuccess, LastError: e.st.LastError,
		Permanent: e.st.Permanent, Failures: e.st.Failures, DeployError: e.deployErr, Hint: e.unserved, LastDeploy: e.lastDeploy,
		Containers: []string{}, ARI: e.st.ARI, ARIError: e.st.ARIError, UnusedSince: e.st.UnusedSince, Phase: e.phase,
		History: slices.Clone(e.st.History), Held: e.st.Hold}
	o, active := wish(e, d, now)
	if e.want != nil {
		s.Domains, s.Containers = e.want.Domains, e.want.Containers
	} else if e.disk != nil {
		s.Domains = e.disk.Domains
	}
	if active {
		s.KeyType, s.Profile, s.Challenge, s.DNSProvider = o.KeyType, o.Profile, cmp.Or(o.Challenge, "http-01"), o.DNS
	}
	if e.disk != nil {
		s.Serial, s.Issuer, s.NotBefore, s.NotAfter = e.disk.Serial, e.disk.Issuer, e.disk.NotBefore, e.disk.NotAfter
		if !e.disk.Placeholder {
			s.RenewAt, s.RenewSource = e.renewal()
			s.Deployed = e.deployedFP == e.disk.Fingerprint
		}
	}
	if e.st.LastError != "" {
		s.NextRetry, s.RenewAt, s.RenewSource = e.st.RetryAt, e.st.RetryAt, SourceRetry
	}
	if e.writeErr != "" {
		s.LastError = "issued but not written to the volume; the write is retried, nothing is ordered again: " + e.writeErr
		s.NextRetry, s.RenewAt, s.RenewSource = e.writeRetryAt, e.writeRetryAt, SourceRetry
	}
	if e.ordering {
		s.RenewSource = Source(e.orderReason)
		s.OrderStuck = orderStuck(e, d, now)
	}
	if e.want == nil && !e.st.UnusedSince.IsZero() {
		s.RenewedTill = e.st.UnusedSince.Add(d.UnusedGrace)
		if !active {
			s.RenewAt, s.RenewSource = time.Time{}, ""
		}
	}
	if e.st.Hold != nil {
		s.RenewAt, s.RenewSource = time.Time{}, ""
	}
	if active && !e.ordering && hold != "" && e.st.Hold == nil {
		if need, _ := needsOrder(e, o, d.Directory, now); need || e.force || e.refresh {
			s.Waiting = hold
		}
	}
	switch {
	case e.want == nil:
		s.State = StateUnused
	case e.st.LastError != "" || e.deployErr != "" || e.writeErr != "":
		s.State = StateFailing
	case e.disk == nil:
		s.State = StatePending
	case e.disk.Placeholder:
		s.State = StatePlaceholder
	case e.ordering:
		s.State = StateRenewing
	default:
		s.State = StateValid
	}
	return s
}
