package acme

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/edgecert/edgecert/acme/atomicfile"
)

// What survives a restart, per certificate: <state>/certs/<name>.json (0600),
// written atomically. The certificate itself lives on the volume (store.go);
// this file holds what the volume cannot say: the CA it came from, what it
// was ordered with, the ARI window, the retry schedule and the history.

// issuedSpec is what the current certificate was ordered with.
type issuedSpec struct {
	KeyType string `json:"key_type"`
	Profile string `json:"profile"`
}

// persisted is one certificate's state file.
type persisted struct {
	Domains     []string    `json:"domains"`
	Directory   string      `json:"directory,omitempty"`
	Issued      *issuedSpec `json:"issued,omitempty"`
	LastAttempt time.Time   `json:"last_attempt,omitzero"`
	LastSuccess time.Time   `json:"last_success,omitzero"`
	LastError   string      `json:"last_error,omitempty"`
	Permanent   bool        `json:"permanent,omitempty"`
	Failures    int         `json:"failures,omitempty"`
	RetryAt     time.Time   `json:"retry_at,omitzero"`
	FailedSpec  string      `json:"failed_spec,omitempty"` // the wish that failed; a new wish retries at once
	ARI         *ARIWindow  `json:"ari,omitempty"`
	ARINextPoll time.Time   `json:"ari_next_poll,omitzero"`
	ARIError    string      `json:"ari_error,omitempty"`
	UnusedSince time.Time   `json:"unused_since,omitzero"`
	History     []Event     `json:"history,omitempty"` // newest last, at most historyLen
}

// EventKind names what happened to a certificate.
type EventKind string

// The kinds of history events.
const (
	EventIssued       EventKind = "issued"
	EventOrderFailed  EventKind = "order_failed"
	EventReloadProven EventKind = "reload_proven"
	EventReloadFailed EventKind = "reload_failed"
	EventUnused       EventKind = "unused" // no running container wants it any more
	EventWanted       EventKind = "wanted" // wanted again after being unused
)

// Event is one thing that happened to a certificate, kept in its history.
type Event struct {
	At     time.Time `json:"at"`
	Kind   EventKind `json:"kind"`
	Serial string    `json:"serial,omitempty"`
	Detail string    `json:"detail,omitempty"`
	TookMS int64     `json:"took_ms,omitempty"` // orders: time inside the CA client
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
