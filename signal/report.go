package signal

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// What a reload did, step by step: the report status and metrics show, and
// its view for one certificate of a batch.

// Step is one recorded step of a reload.
type Step struct {
	Step   string `json:"step"` // inspect, check, config_test, workers_before, signal, workers_new, handshake
	OK     bool   `json:"ok"`
	TookMS int64  `json:"took_ms"`
	Detail string `json:"detail,omitempty"`
}

// Report is the outcome of making one proxy serve a batch of certificates.
type Report struct {
	Container  string            `json:"container"`
	Certs      []string          `json:"certs"`
	At         time.Time         `json:"at"`
	Reloaded   bool              `json:"reloaded"` // a signal was sent
	OK         bool              `json:"ok"`
	Error      string            `json:"error,omitempty"`
	FailedStep string            `json:"failed_step,omitempty"`
	CertErrors map[string]string `json:"cert_errors,omitempty"` // certificates the proxy does not serve after the reload
	// Unserved are certificates the proxy answers for with another
	// certificate (it has no server for the name): a hint, not a failure.
	Unserved map[string]string `json:"unserved,omitempty"`
	Steps    []Step            `json:"steps"`
	Batch    int               `json:"batch,omitempty"` // in a view for one certificate: how many the reload covered
}

// ForCert is r as certificate name's status shows it: the reload's steps
// with name's own handshake only, OK and the error as they concern name,
// and Batch the number of certificates the reload covered. A reload of a
// thousand certificates then weighs one certificate in each status.
func (r Report) ForCert(name string) Report {
	out := r
	out.Batch = len(r.Certs)
	out.Certs = []string{name}
	out.Steps = nil
	// A handshake's detail starts with its certificate's name and ": " (a
	// name holds no colon). One lookup per step: a reload of a thousand
	// certificates is viewed a thousand times.
	in := make(map[string]bool, len(r.Certs))
	for _, c := range r.Certs {
		in[c] = true
	}
	for _, s := range r.Steps {
		if owner, _, ok := strings.Cut(s.Detail, ": "); s.Step == "handshake" && ok && owner != name && in[owner] {
			continue // another certificate's handshake
		}
		out.Steps = append(out.Steps, s)
	}
	out.CertErrors, out.Unserved = nil, nil
	if e, ok := r.CertErrors[name]; ok {
		out.CertErrors = map[string]string{name: e}
	}
	if h, ok := r.Unserved[name]; ok {
		out.Unserved = map[string]string{name: h}
	}
	if err := r.ErrFor(name); err != nil {
		out.OK, out.Error = false, err.Error()
	} else {
		out.OK, out.Error, out.FailedStep = true, "", ""
	}
	return out
}

// ForProxy is r as its proxy's status shows it: the handshakes of the
// batch as one step (the slowest's time; how many, and how many failed, in
// its detail), so that a reload of a thousand certificates stays one line.
func (r Report) ForProxy() Report {
	out := r
	out.Batch = len(r.Certs)
	out.Steps = nil
	for _, s := range r.Steps {
		if s.Step != "handshake" {
			out.Steps = append(out.Steps, s)
		}
	}
	if n, failed, slowest := r.handshakes(); n > 0 {
		out.Steps = append(out.Steps, Step{Step: "handshakes", OK: failed == 0, TookMS: slowest,
			Detail: fmt.Sprintf("%d certificates, %d not served", n, failed)})
	}
	return out
}

// handshakes tallies the report's handshake steps: how many, how many
// failed, and the slowest's time (a batch's handshakes run together).
func (r Report) handshakes() (n, failed int, slowest int64) {
	for _, s := range r.Steps {
		if s.Step != "handshake" {
			continue
		}
		n++
		slowest = max(slowest, s.TookMS)
		if !s.OK {
			failed++
		}
	}
	return n, failed, slowest
}

// ErrFor returns the error of this report for certificate name, or nil.
func (r Report) ErrFor(name string) error {
	if e, ok := r.CertErrors[name]; ok {
		return errors.New(e)
	}
	if h, ok := r.Unserved[name]; ok {
		return NoServerError{Hint: h}
	}
	if !r.OK && r.Error != "" && len(r.CertErrors) == 0 {
		return errors.New(r.Error)
	}
	return nil
}

// loadTook is how long the proxy took to load its configuration: its
// config test, the signal and its new workers' start.
func (rep Report) loadTook() time.Duration {
	var ms int64
	for _, s := range rep.Steps {
		switch s.Step {
		case "config_test", "signal", "workers_new":
			ms += s.TookMS
		}
	}
	return time.Duration(ms) * time.Millisecond
}

// step runs f, recording its outcome and duration.
func (rep *Report) step(name string, f func() (string, error)) error {
	start := time.Now()
	detail, err := f()
	s := Step{Step: name, OK: err == nil, TookMS: time.Since(start).Milliseconds(), Detail: detail}
	if err != nil && detail == "" {
		s.Detail = err.Error()
	}
	rep.Steps = append(rep.Steps, s)
	return err
}

// summary is the steps for the log, one word each; the handshakes of a
// batch are one word: the slowest, and how many.
func (rep *Report) summary() string {
	var words []string
	for _, s := range rep.Steps {
		if s.Step != "handshake" {
			words = append(words, fmt.Sprintf("%s=%dms", s.Step, s.TookMS))
		}
	}
	switch shakes, _, slowest := rep.handshakes(); {
	case shakes == 1:
		words = append(words, fmt.Sprintf("handshake=%dms", slowest))
	case shakes > 1:
		words = append(words, fmt.Sprintf("handshakes=%dms(%d)", slowest, shakes))
	}
	return strings.Join(words, " ")
}
