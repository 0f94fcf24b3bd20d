package acme

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme/atomicfile"
)

// What survives a restart, per certificate: <state>/certs/<name>.json (0600),
// written atomically. The certificate itself lives on the volume (store.go);
// this file holds what the volume cannot say: the CA it came from, what it
// was ordered with, the ARI window, the retry schedule and the history.

// issuedSpec is what the current certificate was ordered with.
type issuedSpec struct {
	KeyType   string `json:"key_type"`
	Profile   string `json:"profile"`
	Challenge string `json:"challenge,omitempty"` // "" HTTP-01
	DNS       string `json:"dns_provider,omitempty"`
}

// persisted is one certificate's state file.
type persisted struct {
	Fingerprint string      `json:"fingerprint,omitempty"` // the certificate this state describes
	Domains     []string    `json:"domains"`
	Directory   string      `json:"directory,omitempty"`
	Issued      *issuedSpec `json:"issued,omitempty"`
	LastAttempt time.Time   `json:"last_attempt,omitzero"`
	LastSuccess time.Time   `json:"last_success,omitzero"`
	LastError   string      `json:"last_error,omitempty"`
	Permanent   bool        `json:"permanent,omitempty"`
	Failures    int         `json:"failures,omitempty"`
	RetryAt     time.Time   `json:"retry_at,omitzero"`
	// LimitedUntil is the CA's Retry-After on a refused order: no order,
	// forced or not, goes out before it.
	LimitedUntil time.Time  `json:"limited_until,omitzero"`
	FailedSpec   string     `json:"failed_spec,omitempty"` // the wish that failed; a new wish retries at once
	ARI          *ARIWindow `json:"ari,omitempty"`
	ARINextPoll  time.Time  `json:"ari_next_poll,omitzero"`
	ARIError     string     `json:"ari_error,omitempty"`
	UnusedSince  time.Time  `json:"unused_since,omitzero"`
	// WishOrders are the recent orders placed because the wish changed,
	// ForcedOrders those an operator forced: both bound how often a
	// certificate is ordered (see orderNow and renew).
	WishOrders []time.Time `json:"wish_orders,omitempty"`
	// Released: the operator released the name (edgecert forget); it is
	// bound again by the next certificate issued for it.
	Released bool `json:"released,omitempty"`
	// Hold: the operator rolled the certificate back; no automatic order
	// until `edgecert renew NAME` releases it.
	Hold *Hold `json:"hold,omitempty"`
	// Imported: taken over from another tool's volume ("acme-companion");
	// its key type is kept until its first renewal.
	Imported     string      `json:"imported,omitempty"`
	ForcedOrders []time.Time `json:"forced_orders,omitempty"`
	History      []Event     `json:"history,omitempty"` // newest last, at most historyLen
}

// EventKind names what happened to a certificate.
type EventKind string

// The kinds of history events.
const (
	EventIssued       EventKind = "issued"
	EventOrderFailed  EventKind = "order_failed"
	EventReloadProven EventKind = "reload_proven"
	EventReloadFailed EventKind = "reload_failed"
	EventWriteFailed  EventKind = "write_failed" // issued, not written to the volume: the write is retried
	EventUnused       EventKind = "unused"       // no running container wants it any more
	EventWanted       EventKind = "wanted"       // wanted again after being unused
	EventRolledBack   EventKind = "rolled_back"  // an earlier version put back by the operator
	EventHoldReleased EventKind = "hold_released"
	EventImported     EventKind = "imported" // taken over from acme-companion's volume
	EventUnserved     EventKind = "unserved" // a proxy answers for its names with another certificate: a hint
)

// Event is one thing that happened to a certificate, kept in its history.
type Event struct {
	At     time.Time `json:"at"`
	Kind   EventKind `json:"kind"`
	Serial string    `json:"serial,omitempty"`
	Detail string    `json:"detail,omitempty"`
	TookMS int64     `json:"took_ms,omitempty"` // orders: time inside the CA client
}

// Hold is a rollback's hold on automatic renewal.
type Hold struct {
	Serial string    `json:"serial"` // the version put back
	From   string    `json:"from"`   // the serial it replaced
	At     time.Time `json:"at"`
}

// historyLen is how many events a certificate keeps.
const historyLen = 50

// stateFile is where name's state lives.
func stateFile(stateDir, name string) string {
	return filepath.Join(stateDir, "certs", name+".json")
}

// loadState reads name's state; a missing file is an empty state.
func loadState(stateDir, name string) (persisted, error) {
	var st persisted
	data, err := os.ReadFile(stateFile(stateDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return persisted{}, err
	}
	return st, nil
}

// saveState writes name's state atomically.
func saveState(stateDir, name string, st persisted) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(stateFile(stateDir, name), data, 0o600)
}

// appendEvent adds ev to the history, keeping the newest historyLen.
func (st *persisted) appendEvent(ev Event) {
	st.History = append(st.History, ev)
	if n := len(st.History); n > historyLen {
		st.History = slices.Clone(st.History[n-historyLen:])
	}
}

// A pending pair is an issued certificate and key that may not be on the
// volume yet: <state>/pending/<name>.json (0600), written as soon as the CA
// hands it over and removed once the state that describes it is saved. A
// write that fails is retried from it, never ordered again; a crash between
// the swap and the state being saved is mended from it at the next start.
type pendingPair struct {
	Chain     string    `json:"chain"` // PEM, leaf first
	Key       string    `json:"key"`   // PEM
	Directory string    `json:"directory"`
	KeyType   string    `json:"key_type"`
	Profile   string    `json:"profile"`
	Challenge string    `json:"challenge,omitempty"`
	DNS       string    `json:"dns_provider,omitempty"`
	Reason    string    `json:"reason"`
	TookMS    int64     `json:"took_ms"`
	IssuedAt  time.Time `json:"issued_at"`
	From      string    `json:"from,omitempty"` // the serial it replaces on this host (a rollback taken: rolled back from)
}

func pendingFile(stateDir, name string) string {
	return filepath.Join(stateDir, "pending", name+".json")
}

func savePending(stateDir, name string, p *pendingPair) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.Write(pendingFile(stateDir, name), data, 0o600)
}

// loadPending returns name's pending pair, or nil if there is none.
func loadPending(stateDir, name string) (*pendingPair, error) {
	data, err := os.ReadFile(pendingFile(stateDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p pendingPair
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func removePending(stateDir, name string) error {
	err := os.Remove(pendingFile(stateDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// pendingNames lists the certificates that have a pending pair.
func pendingNames(stateDir string) []string {
	files, _ := filepath.Glob(filepath.Join(stateDir, "pending", "*.json"))
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	return names
}
