package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/atomicfile"
)

// Notice is the JSON body POSTed to EDGECERT_WEBHOOK_URLS: the documented
// generic schema.
type Notice struct {
	Event    noticeEvent `json:"event"`
	Cert     string      `json:"cert"`
	Domains  []string    `json:"domains"`
	State    acme.State  `json:"state"`
	Serial   string      `json:"serial,omitempty"`
	NotAfter time.Time   `json:"not_after,omitzero"`
	Error    string      `json:"error,omitempty"`
	At       time.Time   `json:"at"`
	Host     string      `json:"host"`
	Text     string      `json:"text"` // one line for humans
}

// notifyConfig says where notices and deployments go.
type notifyConfig struct {
	Webhooks []string // generic JSON
	Slack    []string // Slack/Mattermost incoming webhooks ({"text": ...})
	SMTPAddr string   // host:port; empty: no email
	SMTPFrom string
	SMTPTo   []string
	SMTPUser string
	SMTPPass string
	SMTPTLS  string   // auto, implicit, starttls, opportunistic, none
	Hook     []string // run after each proven deployment; empty: none
	CertsDir string
	Redact   *redactor // applied to every notice before it is sent
}

// notifier turns certificate events into notices (one per change of
// condition, a reminder at most daily) and runs the deploy hook. Its
// CertEvent never blocks: work is queued for Run's goroutines.
type notifier struct {
	cfg   notifyConfig
	log   *slog.Logger
	host  string
	http  *http.Client
	path  string // where conditions persist across restarts
	clock func() time.Time

	// Bounds on what may hang: an SMTP server's dial and whole dialogue, a
	// deploy hook's run, and how long after it the hook's children may hold
	// its output.
	smtpTimeout, hookTimeout, hookWaitDelay time.Duration

	mu      sync.Mutex
	conds   map[string]*condition
	dirty   bool
	changed chan struct{} // conds changed: save them
	notices chan Notice
	hooks   chan acme.CertStatus
}

type condition struct {
	Cond cond      `json:"cond"`
	Sent time.Time `json:"sent"` // when the last notice for it went out
}

// cond is what notices last said of a certificate.
type cond string

const (
	condOK       cond = "ok"
	condFailing  cond = "failing"
	condExpiring cond = "expiring"
)

// noticeEvent is why a notice is sent.
type noticeEvent string

const (
	noticeFailure  noticeEvent = "failure"
	noticeReminder noticeEvent = "reminder" // still failing (or expiring), a day after the last notice
	noticeRecovery noticeEvent = "recovery"
	noticeExpiring noticeEvent = "expiring" // a sixth of the lifetime left without a renewal
)

const reminderEvery = 24 * time.Hour

func newNotifier(cfg notifyConfig, stateDir string, log *slog.Logger) *notifier {
	host, _ := os.Hostname()
	n := &notifier{cfg: cfg, log: log, host: host, http: &http.Client{Timeout: 10 * time.Second},
		path: filepath.Join(stateDir, "notify.json"), clock: time.Now, conds: map[string]*condition{},
		smtpTimeout: 30 * time.Second, hookTimeout: time.Minute, hookWaitDelay: 5 * time.Second,
		changed: make(chan struct{}, 1), notices: make(chan Notice, 256), hooks: make(chan acme.CertStatus, 64)}
	if data, err := os.ReadFile(n.path); err == nil {
		if err := json.Unmarshal(data, &n.conds); err != nil {
			log.Warn("cannot read notification state; starting afresh", "err", err)
			n.conds = map[string]*condition{}
		}
	}
	return n
}

func (n *notifier) enabled() bool {
	return len(n.cfg.Webhooks)+len(n.cfg.Slack) > 0 || n.cfg.SMTPAddr != ""
}

// CertEvent is acme's EventSink: called with the manager's lock held.
func (n *notifier) CertEvent(name string, e acme.Event, s acme.CertStatus) {
	switch e.Kind {
	case acme.EventOrderFailed, acme.EventReloadFailed, acme.EventWriteFailed:
		n.transition(s, condFailing, e.Detail)
	case acme.EventReloadProven:
		n.transition(s, condOK, "")
		if len(n.cfg.Hook) > 0 {
			select {
			case n.hooks <- s:
			default:
				n.log.Error("deploy hook queue full; hook skipped", "cert", name)
			}
		}
	}
}

// transition moves a certificate to cond and queues the notice that change
// deserves: failure (or a daily reminder), recovery, or expiring.
func (n *notifier) transition(s acme.CertStatus, to cond, detail string) {
	if !n.enabled() {
		return
	}
	now := n.clock()
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.conds[s.Name]
	if c == nil {
		c = &condition{Cond: condOK}
		n.conds[s.Name] = c
	}
	if to == condExpiring && c.Cond == condFailing {
		to = condFailing // already told, and reminded daily: no second condition
	}
	var event noticeEvent
	switch {
	case to == c.Cond && to != condOK && now.Sub(c.Sent) >= reminderEvery:
		event = noticeReminder
	case to == c.Cond:
	case to == condOK:
		event = noticeRecovery
	case to == condFailing:
		event = noticeFailure
	case to == condExpiring && c.Cond == condOK:
		event = noticeExpiring
	}
	if c.Cond != to {
		c.Cond = to
		n.markDirty()
	}
	if event == "" {
		return
	}
	c.Sent = now
	n.markDirty()
	nt := Notice{Event: event, Cert: s.Name, Domains: s.Domains, State: s.State, Serial: s.Serial, NotAfter: s.NotAfter,
		Error: detail, At: now, Host: n.host}
	nt.Text = noticeText(nt)
	select {
	case n.notices <- nt:
	default:
		n.log.Error("notification queue full; notice dropped", "cert", s.Name, "event", event)
	}
}

// clusterNotice is the "certificate" of notices about this host's place in
// the cluster.
const clusterNotice = "(cluster)"

// ClusterState tells of this host losing the cluster (a failure notice,
// reminded daily) and regaining it (a recovery), as for a certificate.
func (n *notifier) ClusterState(ok bool, why string) {
	to := condOK
	if !ok {
		to = condFailing
	}
	n.transition(acme.CertStatus{Name: clusterNotice}, to, why)
}

func noticeText(nt Notice) string {
	if nt.Cert == clusterNotice {
		if nt.Event == noticeRecovery {
			return fmt.Sprintf("edgecert on %s: back in the cluster; orders resume", nt.Host)
		}
		return fmt.Sprintf("edgecert on %s: CLUSTER UNREACHABLE: serving what it has, ordering nothing: %s", nt.Host, cut(nt.Error, 400))
	}
	what := map[noticeEvent]string{
		noticeFailure:  "FAILED",
		noticeReminder: "still FAILING",
		noticeRecovery: "recovered",
		noticeExpiring: "EXPIRES SOON without a successful renewal",
	}[nt.Event]
	t := fmt.Sprintf("edgecert on %s: certificate %s (%s) %s", nt.Host, nt.Cert, strings.Join(nt.Domains, ", "), what)
	if !nt.NotAfter.IsZero() {
		t += fmt.Sprintf("; expires %s", nt.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	}
	if nt.Error != "" {
		t += ": " + cut(errorCause(nt.Error), 400)
	}
	return t
}

// Run sends notices, runs hooks and checks for approaching expiry until ctx
// ends. status lists the certificates for the expiry check. Sending and
// hooks have goroutines of their own: a mail server or hook that hangs
// delays its own queue, never the expiry checks or the saving of state.
func (n *notifier) Run(ctx context.Context, status func() []acme.CertStatus) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); consume(ctx, n.hooks, func(s acme.CertStatus) { n.runHook(ctx, s) }) }()
	go func() { defer wg.Done(); consume(ctx, n.notices, func(nt Notice) { n.send(ctx, nt) }) }()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	n.checkExpiry(status())
	for {
		n.save()
		select {
		case <-ctx.Done():
			return nil
		case <-n.changed:
		case <-tick.C:
			n.checkExpiry(status())
		}
	}
}

// consume runs f on each value from ch, one after another, until ctx ends.
func consume[T any](ctx context.Context, ch <-chan T, f func(T)) {
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-ch:
			f(v)
		}
	}
}

// markDirty notes that conds must be saved. n.mu is held.
func (n *notifier) markDirty() {
	n.dirty = true
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// checkExpiry notices certificates in use with less than a sixth of their
// lifetime left: their renewal, due at two thirds, has not succeeded.
func (n *notifier) checkExpiry(certs []acme.CertStatus) {
	now := n.clock()
	for _, s := range certs {
		if s.State == acme.StateUnused || s.State == acme.StatePlaceholder || s.State == acme.StatePending || s.NotAfter.IsZero() {
			continue
		}
		if left := s.NotAfter.Sub(now); left < s.NotAfter.Sub(s.NotBefore)/6 {
			n.transition(s, condExpiring, fmt.Sprintf("%s left", left.Round(time.Minute)))
		}
	}
}

func (n *notifier) save() {
	n.mu.Lock()
	if !n.dirty {
		n.mu.Unlock()
		return
	}
	data, err := json.MarshalIndent(n.conds, "", "  ")
	n.dirty = false
	n.mu.Unlock()
	if err == nil {
		err = atomicfile.Write(n.path, data, 0o600)
	}
	if err != nil {
		n.log.Error("cannot save notification state", "err", err)
	}
}

// send delivers one notice to every destination, each with retries.
func (n *notifier) send(ctx context.Context, nt Notice) {
	nt = n.cfg.Redact.notice(nt)
	generic, _ := json.Marshal(nt)
	text, _ := json.Marshal(map[string]string{"text": nt.Text})
	for _, u := range n.cfg.Webhooks {
		n.deliver(ctx, "webhook", u, nt, func() error { return n.post(ctx, u, generic) })
	}
	for _, u := range n.cfg.Slack {
		n.deliver(ctx, "slack", u, nt, func() error { return n.post(ctx, u, text) })
	}
	if n.cfg.SMTPAddr != "" {
		n.deliver(ctx, "email", n.cfg.SMTPAddr, nt, func() error { return n.mail(ctx, nt) })
	}
}

// deliver tries f up to three times (now, after 2 s, after 10 s).
func (n *notifier) deliver(ctx context.Context, kind, dest string, nt Notice, f func() error) {
	var err error
	for i, wait := range []time.Duration{0, 2 * time.Second, 10 * time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err = f(); err == nil {
			n.log.Info("notice sent", "cert", nt.Cert, "event", nt.Event, "via", kind)
			return
		}
		n.log.Warn("notice not delivered", "cert", nt.Cert, "event", nt.Event, "via", kind, "attempt", i+1, "err", err)
	}
	n.log.Error("notice dropped after 3 attempts", "cert", nt.Cert, "event", nt.Event, "via", kind, "dest", destName(dest), "err", err)
}

func (n *notifier) post(ctx context.Context, dest string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: bad URL", destName(dest))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text carries the whole URL, secrets and all
			return fmt.Errorf("%s %s: %w", ue.Op, destName(ue.URL), ue.Err)
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s answered %s", destName(dest), resp.Status)
	}
	return nil
}

// redact shows where a URL points without what may be secret in it: the
// scheme and host only (no user:password@, path, query or fragment).
// destName names a webhook destination in logs and errors: its scheme and
// host only (a Slack webhook's path is its token).
func destName(u string) string {
	pu, err := url.Parse(strings.TrimSpace(u))
	if err != nil || pu.Host == "" {
		return "(a URL that does not parse)"
	}
	r := pu.Scheme + "://" + pu.Host
	if pu.Path != "" || pu.RawQuery != "" || pu.Fragment != "" {
		r += "/…"
	}
	return r
}
