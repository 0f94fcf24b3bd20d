// Package acme owns the certificate lifecycle: which certificates are
// wanted, what is on the volume, when to order (ARI first, lifetime ratio as
// backstop), retries that survive restarts, and handing each new pair to a
// Deployer. It knows nothing of Docker or nginx.
package acme

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Want is one certificate that running containers ask for. Empty options
// take the configured defaults.
type Want struct {
	Name       string
	Domains    []string
	Containers []string
	KeyType    string
	Profile    string
	Email      string
	Group      string // passed on to the Deployer: which proxies serve it
}

// Deployment is a certificate that has just become current on the volume.
type Deployment struct {
	Name        string
	Group       string
	Domains     []string
	Serial      string
	Fingerprint string // SHA-256 of the leaf, hex
}

// Deployer makes the proxies serve a certificate and proves that they do.
// It is called again (with backoff) until it returns nil.
type Deployer interface {
	Deploy(ctx context.Context, d Deployment) error
}

// preflighter checks, before an order, that the CA will be able to validate
// domains (for HTTP-01: a proxy serves the webroot's challenge directory).
type preflighter interface {
	Preflight(ctx context.Context, domains []string) error
}

// issuer talks to the CA.
type issuer interface {
	Obtain(ctx context.Context, o Order) (chain, key []byte, err error)
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*RenewalInfo, error)
}

// ManagerConfig tunes the Manager.
type ManagerConfig struct {
	Directory      string // the CA's directory URL; a certificate from another CA is re-ordered
	StateDir       string
	MaxOrders      int           // orders in flight at once across all certificates
	DefaultKeyType string        // key type when a Want names none
	DefaultProfile string        // profile when a Want names none ("" = the CA's default)
	UnusedGrace    time.Duration // how long a certificate no container wants is still renewed (default 7 days)
	// PreflightWait bounds how long an order waits for its preflight check
	// (default 30s): long enough for a proxy that is still starting.
	PreflightWait time.Duration
	FlatLinks     bool // also write nginx-proxy's <domain>.crt/.key/.chain.pem links
}

var deployBackoff = []time.Duration{15 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}

// Manager runs the certificate lifecycle. Create it with NewManager, feed it
// with Update, and run it with Run; Status, Renew and DryRun are safe to call
// from any goroutine.
type Manager struct {
	cfg   ManagerConfig
	store *Store
	iss   issuer
	dep   Deployer
	log   *slog.Logger
	now   func() time.Time
	pre   preflighter
	dry   issuer
	sink  EventSink

	wants   chan []Want
	renews  chan renewReq
	results chan result
	wake    chan struct{}

	mu       sync.Mutex
	certs    map[string]*entry
	synced   bool
	ordering int
	hold     string // why orders wait, "" if they need not
}

// issuedSpec is what the current certificate was ordered with.
type issuedSpec struct {
	KeyType string `json:"key_type"`
	Profile string `json:"profile"`
}

// persisted is what survives a restart, per certificate, in the state volume.
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

// Event is one thing that happened to a certificate, kept in its history.
type Event struct {
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"` // issued, order_failed, reload_proven, reload_failed, unused, wanted
	Serial string    `json:"serial,omitempty"`
	Detail string    `json:"detail,omitempty"`
	TookMS int64     `json:"took_ms,omitempty"` // orders: time inside the CA client
}

// historyLen is how many events a certificate keeps.
const historyLen = 50

// EventSink hears about every history event as it happens (notifications,
// metrics). It is called with the Manager's lock held: it must not block or
// call back into the Manager.
type EventSink interface {
	CertEvent(name string, e Event, s CertStatus)
}

type entry struct {
	name  string
	want  *Want  // nil: no running container wants it
	group string // the group it was last wanted for, kept while unwanted
	disk  *Info  // what is current on the volume, nil if nothing
	st    persisted

	ordering       bool
	orderSource    string
	phase          string // what the order in flight is doing: preflight, ordering, writing
	force          bool
	polling        bool // an ARI request is in flight
	deploying      bool
	deployedFP     string // fingerprint proven served, "" if not (yet)
	deployErr      string
	deployFailures int
	deployRetryAt  time.Time
	lastDeploy     time.Time

	forceWaiters  []chan RenewResult // waiting for an order to start
	orderWaiters  []chan RenewResult // attached to the order in flight
	deployWaiters []chan RenewResult // waiting for deployment of deployWaitFP
	deployWaitFP  string
	// deployWaitNoOrder: the waiters asked for a renewal of a certificate
	// that was current, and got a reload retried instead of an order.
	deployWaitNoOrder bool
}

type resultKind int

const (
	orderDone resultKind = iota
	deployDone
	ariDone
)

type result struct {
	kind resultKind
	name string
	fp   string // deploy, ari: the fingerprint concerned
	grp  string // deploy: the group it was proven for
	info *Info  // order: what was written
	ari  *RenewalInfo
	err  error
	took time.Duration // inside the issuer (lego)
	pre  time.Duration // in the preflight check
}

type renewReq struct {
	name  string
	force bool
	reply chan RenewResult
}

// RenewResult is the outcome of one renew request.
type RenewResult struct {
	Name     string    `json:"name"`
	Ordered  bool      `json:"ordered"`
	DryRun   bool      `json:"dry_run,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Message  string    `json:"message"`
	Err      string    `json:"error,omitempty"`
}

// NewManager returns a Manager; iss orders certificates and dep deploys them.
func NewManager(cfg ManagerConfig, store *Store, iss issuer, dep Deployer, log *slog.Logger) *Manager {
	cfg.MaxOrders = max(cfg.MaxOrders, 1)
	if cfg.PreflightWait <= 0 {
		cfg.PreflightWait = 30 * time.Second
	}
	if cfg.UnusedGrace <= 0 {
		cfg.UnusedGrace = 7 * 24 * time.Hour
	}
	cfg.DefaultKeyType = cmp.Or(cfg.DefaultKeyType, "ec256")
	return &Manager{
		cfg: cfg, store: store, iss: iss, dep: dep, log: log, now: time.Now,
		wants:   make(chan []Want, 1),
		renews:  make(chan renewReq),
		results: make(chan result),
		wake:    make(chan struct{}, 1),
		certs:   map[string]*entry{},
	}
}

// SetPreflight installs a check that runs before every order; call it
// before Run. The order waits up to ManagerConfig.PreflightWait for it to pass.
func (m *Manager) SetPreflight(p preflighter) { m.pre = p }

// SetEventSink installs a listener for certificate events; call it before Run.
func (m *Manager) SetEventSink(s EventSink) { m.sink = s }

// record appends an event to e's history (the caller saves the state) and
// tells the sink. m.mu is held.
func (m *Manager) record(e *entry, ev Event) {
	ev.At = m.now()
	e.st.History = append(e.st.History, ev)
	if n := len(e.st.History); n > historyLen {
		e.st.History = slices.Clone(e.st.History[n-historyLen:])
	}
	if m.sink != nil {
		m.sink.CertEvent(e.name, ev, m.statusOf(e, ev.At))
	}
}

// setPhase notes what the order in flight for name is doing.
func (m *Manager) setPhase(name, phase string) {
	m.mu.Lock()
	if e := m.certs[name]; e != nil {
		e.phase = phase
	}
	m.mu.Unlock()
}

// SetDryRunIssuer installs the issuer DryRun orders from (a staging or test
// CA); call it before Run.
func (m *Manager) SetDryRunIssuer(iss issuer) { m.dry = iss }

// Update hands the Manager the complete set of wanted certificates. The
// newest set replaces one not yet taken.
func (m *Manager) Update(ws []Want) {
	select {
	case <-m.wants:
	default:
	}
	m.wants <- ws
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Hold makes new orders wait while reason is not "" (for example: no proxy
// is running to answer HTTP-01, and an order would only burn a failed
// validation). Hold("") releases them.
func (m *Manager) Hold(reason string) {
	m.mu.Lock()
	changed := m.hold != reason
	m.hold = reason
	m.mu.Unlock()
	if changed {
		if reason != "" {
			m.log.Warn("orders wait", "reason", reason)
		}
		m.poke()
	}
}

// Redeploy asks for every current certificate to be proven served again,
// for example because the set of proxies changed.
func (m *Manager) Redeploy() {
	m.mu.Lock()
	for _, e := range m.certs {
		e.deployedFP = ""
		e.deployRetryAt = time.Time{}
	}
	m.mu.Unlock()
	m.poke()
}

// Run is the Manager's loop. It returns when ctx ends, after every order,
// ARI request and deployment it started has finished.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		wait := m.launchDue(ctx, &wg)
		m.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for _, e := range m.certs {
				e.reply(RenewResult{Name: e.name, Err: "edgecert is shutting down"})
			}
			m.mu.Unlock()
			return nil
		case ws := <-m.wants:
			m.reconcile(ws)
		case r := <-m.renews:
			m.renew(r)
		case r := <-m.results:
			m.apply(r)
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// Renew asks for name to be renewed (force: even if not due, and past any
// retry wait) and waits for the outcome, deployment included.
func (m *Manager) Renew(ctx context.Context, name string, force bool) RenewResult {
	req := renewReq{name: name, force: force, reply: make(chan RenewResult, 1)}
	select {
	case m.renews <- req:
	case <-ctx.Done():
		return RenewResult{Name: name, Err: ctx.Err().Error()}
	}
	select {
	case r := <-req.reply:
		return r
	case <-ctx.Done():
		return RenewResult{Name: name, Err: "gave up waiting: " + ctx.Err().Error() + " (the renewal goes on; see status)"}
	}
}

// DryRun performs a whole order for name against the dry-run CA and throws
// the certificate away: the volume, the state and the proxies are not touched.
func (m *Manager) DryRun(ctx context.Context, name string) RenewResult {
	if m.dry == nil {
		return RenewResult{Name: name, DryRun: true, Err: "no dry-run CA is configured"}
	}
	m.mu.Lock()
	e, ok := m.certs[name]
	var o Order
	if ok {
		o, ok = m.order(e, m.now())
		o.Replaces = nil
	}
	m.mu.Unlock()
	if !ok {
		return RenewResult{Name: name, DryRun: true, Err: fmt.Sprintf("no certificate named %q is wanted or renewed (see edgecert status)", name)}
	}
	res := RenewResult{Name: name, DryRun: true, Ordered: true}
	if err := m.preflight(ctx, o.Domains); err != nil {
		res.Message, res.Err = "dry run failed", err.Error()
		return res
	}
	chain, _, err := m.dry.Obtain(ctx, o)
	if err != nil {
		res.Message, res.Err = "dry run failed", err.Error()
		return res
	}
	leaf, _, err := parseChain(chain)
	if err != nil {
		res.Message, res.Err = "dry run: the CA's answer is unreadable", err.Error()
		return res
	}
	res.Serial, res.NotAfter = infoOf(leaf).Serial, leaf.NotAfter
	res.Message = "dry run succeeded: the CA issued a certificate, which was discarded (nothing written, nothing reloaded)"
	return res
}

func (m *Manager) reconcile(ws []Want) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.synced {
		// Certificates left on the volume by an earlier run are known too.
		names, err := m.store.Names()
		if err != nil {
			m.log.Error("cannot list the certificate volume", "err", err)
		}
		for _, n := range names {
			m.entry(n)
		}
		m.synced = true
	}
	wanted := map[string]bool{}
	for i := range ws {
		w := ws[i]
		wanted[w.Name] = true
		e := m.entry(w.Name)
		if e.want == nil || !slices.Equal(e.want.Domains, w.Domains) {
			m.log.Debug("certificate wanted", "cert", w.Name, "domains", strings.Join(w.Domains, ","), "container", strings.Join(w.Containers, ","))
		}
		if e.group != w.Group {
			// Other proxies serve it now (even if no container wanted it
			// for a moment, as when one is recreated): prove it on them.
			e.deployedFP, e.deployRetryAt = "", time.Time{}
			e.group = w.Group
		}
		e.want = &w
		if !e.st.UnusedSince.IsZero() {
			e.st.UnusedSince = time.Time{}
			m.record(e, Event{Kind: "wanted", Detail: strings.Join(w.Containers, ",")})
			m.saveState(e)
		}
		if e.disk == nil {
			info, err := m.store.WritePlaceholder(w.Name, w.Domains)
			if err != nil {
				m.log.Error("cannot write placeholder certificate", "cert", w.Name, "err", err)
				continue
			}
			e.disk = info
			m.log.Info("placeholder certificate written", "cert", w.Name, "domains", strings.Join(w.Domains, ","))
		}
		if m.cfg.FlatLinks {
			if err := m.store.WriteFlatLinks(w.Name, w.Domains); err != nil {
				m.log.Error("cannot write nginx-proxy links", "cert", w.Name, "err", err)
			}
		}
	}
	for _, e := range m.certs {
		if wanted[e.name] {
			continue
		}
		if e.want != nil || e.st.UnusedSince.IsZero() {
			e.st.UnusedSince = m.now()
			m.record(e, Event{Kind: "unused"})
			m.saveState(e)
			m.log.Info("certificate no longer wanted by any container; files kept", "cert", e.name,
				"renewed_until", e.st.UnusedSince.Add(m.cfg.UnusedGrace).Format(time.RFC3339))
		}
		e.want = nil
	}
}

// entry returns the entry for name, loading its state from the volumes the
// first time.
func (m *Manager) entry(name string) *entry {
	if e, ok := m.certs[name]; ok {
		return e
	}
	e := &entry{name: name}
	info, err := m.store.Read(name)
	switch {
	case err == nil:
		e.disk = info
	case !errors.Is(err, fs.ErrNotExist):
		m.log.Error("cannot read the certificate on the volume; a new one will be ordered", "cert", name, "err", err)
	}
	data, err := os.ReadFile(m.statePath(name))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &e.st); err != nil {
			m.log.Error("cannot read certificate state; starting afresh", "cert", name, "err", err)
			e.st = persisted{}
		}
	case !errors.Is(err, fs.ErrNotExist):
		m.log.Error("cannot read certificate state; starting afresh", "cert", name, "err", err)
	}
	m.certs[name] = e
	return e
}

func (m *Manager) statePath(name string) string {
	return filepath.Join(m.cfg.StateDir, "certs", name+".json")
}

func (m *Manager) saveState(e *entry) {
	data, err := json.MarshalIndent(e.st, "", "  ")
	if err == nil {
		err = WriteFileAtomic(m.statePath(e.name), data, 0o600)
	}
	if err != nil {
		m.log.Error("cannot save certificate state", "cert", e.name, "err", err)
	}
}

// inGrace says whether an unwanted certificate is still renewed.
func (m *Manager) inGrace(e *entry, now time.Time) bool {
	return e.want == nil && e.disk != nil && !e.disk.Placeholder && !e.st.UnusedSince.IsZero() &&
		now.Before(e.st.UnusedSince.Add(m.cfg.UnusedGrace))
}

// order returns what to order for e now, and false if e is neither wanted
// nor in its grace period.
func (m *Manager) order(e *entry, now time.Time) (Order, bool) {
	switch {
	case e.want != nil:
		return Order{Domains: slices.Clone(e.want.Domains), KeyType: cmp.Or(e.want.KeyType, m.cfg.DefaultKeyType),
			Profile: cmp.Or(e.want.Profile, m.cfg.DefaultProfile), Email: e.want.Email}, true
	case m.inGrace(e, now):
		o := Order{Domains: slices.Clone(e.disk.Domains), KeyType: cmp.Or(e.disk.KeyType, m.cfg.DefaultKeyType), Profile: m.cfg.DefaultProfile}
		if e.st.Issued != nil {
			o.KeyType, o.Profile = cmp.Or(e.st.Issued.KeyType, o.KeyType), e.st.Issued.Profile
		}
		return o, true
	}
	return Order{}, false
}

func specKey(o Order) string {
	d := slices.Clone(o.Domains)
	slices.Sort(d)
	return strings.Join(d, ",") + "|" + o.KeyType + "|" + o.Profile
}

// renewal says when e's current certificate is due and why.
func (e *entry) renewal() (time.Time, string) {
	return renewalTime(e.disk.NotBefore, e.disk.NotAfter, e.st.ARI)
}

// needsOrder says whether the volume lacks a certificate that is right for
// o now: missing, placeholder, other names, key type, profile or CA, or due.
func (m *Manager) needsOrder(e *entry, o Order, now time.Time) (bool, string) {
	switch {
	case e.disk == nil || e.disk.Placeholder:
		return true, "new certificate"
	case !sameSet(e.disk.Domains, o.Domains):
		return true, "domains changed"
	case e.st.Directory != "" && e.st.Directory != m.cfg.Directory:
		return true, "CA directory changed"
	case e.disk.KeyType != "" && e.disk.KeyType != o.KeyType:
		return true, "key type changed"
	case e.st.Issued != nil && e.st.Issued.Profile != o.Profile:
		return true, "profile changed"
	}
	if at, src := e.renewal(); !now.Before(at) {
		return true, "due (" + src + ")"
	}
	return false, ""
}

// launchDue starts what is due and returns how long to sleep. m.mu is held.
func (m *Manager) launchDue(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	if !m.synced || ctx.Err() != nil {
		return time.Hour
	}
	now := m.now()
	next := now.Add(time.Hour)
	type cand struct {
		e      *entry
		o      Order
		fresh  bool
		reason string
	}
	var orders []cand
	for _, e := range m.certs {
		o, active := m.order(e, now)
		if !active {
			continue
		}
		real := e.disk != nil && !e.disk.Placeholder
		if !e.ordering {
			need, why := m.needsOrder(e, o, now)
			retry := e.st.RetryAt
			if e.st.FailedSpec != specKey(o) {
				retry = time.Time{} // a changed wish is tried at once
			}
			switch {
			case e.force:
				orders = append(orders, cand{e, o, !real, "forced"})
			case need && !now.Before(retry):
				orders = append(orders, cand{e, o, !real, why})
			case need:
				next = earliest(next, retry)
			case real:
				at, _ := e.renewal()
				next = earliest(next, at)
			}
		}
		if real && !e.polling {
			if now.Before(e.st.ARINextPoll) {
				next = earliest(next, e.st.ARINextPoll)
			} else {
				m.startARI(ctx, wg, e)
			}
		}
		if e.want != nil && real && !e.deploying && e.deployedFP != e.disk.Fingerprint {
			if now.Before(e.deployRetryAt) {
				next = earliest(next, e.deployRetryAt)
			} else {
				m.startDeploy(ctx, wg, e)
			}
		}
	}
	// New certificates first, then by name for a stable order.
	sort.Slice(orders, func(i, j int) bool {
		if orders[i].fresh != orders[j].fresh {
			return orders[i].fresh
		}
		return orders[i].e.name < orders[j].e.name
	})
	for _, c := range orders {
		if m.ordering >= m.cfg.MaxOrders || m.hold != "" {
			break
		}
		m.startOrder(ctx, wg, c.e, c.o, c.reason)
	}
	return max(next.Sub(now), 10*time.Millisecond)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (m *Manager) startOrder(ctx context.Context, wg *sync.WaitGroup, e *entry, o Order, reason string) {
	e.ordering, e.force = true, false
	e.orderSource = reason
	e.orderWaiters = append(e.orderWaiters, e.forceWaiters...)
	e.forceWaiters = nil
	m.ordering++
	// Replace the current certificate by ARI's rules (exempt from rate
	// limits) when the CA knows it: same CA, answered ARI, a shared name.
	if e.disk != nil && !e.disk.Placeholder && e.st.ARI != nil && e.disk.Leaf != nil &&
		(e.st.Directory == "" || e.st.Directory == m.cfg.Directory) &&
		slices.ContainsFunc(o.Domains, func(d string) bool { return slices.Contains(e.disk.Domains, d) }) {
		o.Replaces = e.disk.Leaf
	}
	name := e.name
	m.log.Info("ordering certificate", "cert", name, "domains", strings.Join(o.Domains, ","), "reason", reason,
		"key_type", o.KeyType, "profile", o.Profile, "replaces", o.Replaces != nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chain, key []byte
		var took time.Duration
		m.setPhase(name, "preflight")
		pstart := time.Now()
		err := m.preflight(ctx, o.Domains)
		pre := time.Since(pstart)
		if err == nil {
			m.setPhase(name, "ordering")
			start := time.Now()
			chain, key, err = m.iss.Obtain(ctx, o)
			took = time.Since(start)
		}
		var info *Info
		if err == nil {
			m.setPhase(name, "writing")
			info, err = m.store.Write(name, chain, key)
		}
		if info != nil {
			info.KeyType = cmp.Or(info.KeyType, o.KeyType)
		}
		m.send(ctx, result{kind: orderDone, name: name, info: info, err: err, took: took, pre: pre, fp: specKey(o)})
	}()
}

// preflight polls the check until it passes or PreflightWait is over. It
// reports the most telling failure: a check cut short by the deadline only
// says "context deadline exceeded", so the one before it (nginx's 404, say)
// is kept when there was one.
func (m *Manager) preflight(ctx context.Context, domains []string) error {
	if m.pre == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PreflightWait)
	defer cancel()
	var reason error
	for {
		err := m.pre.Preflight(ctx, domains)
		if err == nil {
			return nil
		}
		if reason == nil || ctx.Err() == nil {
			reason = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("preflight (no order placed): %w", reason)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (m *Manager) startDeploy(ctx context.Context, wg *sync.WaitGroup, e *entry) {
	e.deploying = true
	d := Deployment{Name: e.name, Group: e.want.Group, Domains: slices.Clone(e.disk.Domains), Serial: e.disk.Serial, Fingerprint: e.disk.Fingerprint}
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		err := m.dep.Deploy(ctx, d)
		m.send(ctx, result{kind: deployDone, name: d.Name, fp: d.Fingerprint, grp: d.Group, err: err, took: time.Since(start)})
	}()
}

func (m *Manager) startARI(ctx context.Context, wg *sync.WaitGroup, e *entry) {
	e.polling = true
	leaf, fp := e.disk.Leaf, e.disk.Fingerprint
	wg.Add(1)
	go func() {
		defer wg.Done()
		ri, err := m.iss.RenewalInfo(ctx, leaf)
		m.send(ctx, result{kind: ariDone, name: e.name, fp: fp, ari: ri, err: err})
	}()
}

// send hands a worker's result to the loop, or drops it at shutdown: what the
// worker wrote is on the volume and is read back at the next start.
func (m *Manager) send(ctx context.Context, r result) {
	select {
	case m.results <- r:
	case <-ctx.Done():
	}
}

func (m *Manager) apply(r result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.certs[r.name]
	switch r.kind {
	case deployDone:
		m.applyDeploy(e, r)
	case ariDone:
		m.applyARI(e, r)
	case orderDone:
		m.applyOrder(e, r)
	}
}

func (m *Manager) applyARI(e *entry, r result) {
	e.polling = false
	if e.disk == nil || e.disk.Fingerprint != r.fp {
		return // the certificate changed meanwhile; the new one is asked about next
	}
	now := m.now()
	switch {
	case errors.Is(r.err, ErrNoARI):
		e.st.ARI, e.st.ARIError = nil, ""
		e.st.ARINextPoll = now.Add(ariMaxPoll)
	case r.err != nil:
		e.st.ARIError = r.err.Error()
		e.st.ARINextPoll = now.Add(ariErrorPoll)
		m.log.Warn("renewal info unavailable; the lifetime ratio applies until it is", "cert", e.name, "err", r.err)
	default:
		chosen := chooseInWindow(e.st.ARI, r.ari.Start, r.ari.End, e.disk.NotBefore, e.disk.NotAfter, randInt63n)
		changed := e.st.ARI == nil || !e.st.ARI.Chosen.Equal(chosen)
		e.st.ARI = &ARIWindow{Start: r.ari.Start, End: r.ari.End, Chosen: chosen, Explanation: r.ari.Explanation, FetchedAt: now}
		e.st.ARIError = ""
		e.st.ARINextPoll = nextARIPoll(now, r.ari.RetryAfter)
		if changed {
			at, src := e.renewal()
			m.log.Info("renewal scheduled", "cert", e.name, "renew_at", at.Format(time.RFC3339), "source", src,
				"window_start", r.ari.Start.Format(time.RFC3339), "window_end", r.ari.End.Format(time.RFC3339))
		}
	}
	m.saveState(e)
}

func (m *Manager) applyDeploy(e *entry, r result) {
	now := m.now()
	e.deploying = false
	e.lastDeploy = now
	if r.err != nil {
		first := e.deployErr == ""
		e.deployErr = r.err.Error()
		e.deployRetryAt = now.Add(deployBackoff[min(e.deployFailures, len(deployBackoff)-1)])
		e.deployFailures++
		m.log.Error("deployment failed; will retry", "cert", e.name, "err", r.err, "retry_at", e.deployRetryAt.Format(time.RFC3339))
		if first || r.fp == e.deployWaitFP {
			m.record(e, Event{Kind: "reload_failed", Serial: e.disk.Serial, Detail: r.err.Error()})
			m.saveState(e)
		}
	} else {
		if r.fp == e.deployWaitFP || e.deployErr != "" {
			// A new certificate served, or a failure mended (not a mere check).
			m.record(e, Event{Kind: "reload_proven", Serial: e.disk.Serial})
			m.saveState(e)
		}
		e.deployedFP, e.deployErr, e.deployFailures, e.deployRetryAt = r.fp, "", 0, time.Time{}
		if r.grp != e.group {
			e.deployedFP = "" // proven for the group it had; the new one is next
		}
		// A proxy loaded its configuration: whatever made other deployments
		// fail (a config naming files not written yet, say) may be gone.
		// Check them now; a proxy that already serves them is not reloaded.
		for _, o := range m.certs {
			if o.deployErr != "" && !o.deploying {
				o.deployRetryAt = time.Time{}
			}
		}
	}
	if e.deployWaitFP == r.fp {
		res := RenewResult{Name: e.name, Ordered: true, Serial: e.disk.Serial, NotAfter: e.disk.NotAfter, Message: "certificate issued, written and proven served"}
		if r.err != nil {
			res.Message = "certificate issued and written, but the reload was not proven"
			res.Err = r.err.Error()
		}
		if e.deployWaitNoOrder {
			res.Ordered, res.Message = false, "not due (no order); its reload was retried and is proven served"
			if r.err != nil {
				res.Message = "not due (no order); its reload was retried and is still not proven"
			}
		}
		for _, w := range e.deployWaiters {
			w <- res
		}
		e.deployWaiters, e.deployWaitFP, e.deployWaitNoOrder = nil, "", false
	}
}

func (m *Manager) applyOrder(e *entry, r result) {
	now := m.now()
	m.ordering--
	e.ordering, e.phase = false, ""
	e.st.LastAttempt = now
	if r.err != nil {
		var oe *OrderError
		var ra time.Duration
		permanent := false
		if errors.As(r.err, &oe) {
			ra, permanent = oe.RetryAfter, oe.Permanent
		}
		e.st.Failures++
		e.st.LastError, e.st.Permanent, e.st.FailedSpec = r.err.Error(), permanent, r.fp
		e.st.RetryAt = retryAt(now, e.st.Failures, ra, permanent, rand.Float64)
		m.record(e, Event{Kind: "order_failed", Detail: r.err.Error(), TookMS: r.took.Milliseconds()})
		m.saveState(e)
		m.log.Error("order failed; will retry", "cert", e.name, "err", r.err, "permanent", permanent,
			"failures", e.st.Failures, "retry_at", e.st.RetryAt.Format(time.RFC3339))
		for _, w := range e.orderWaiters {
			w <- RenewResult{Name: e.name, Ordered: true, Message: "order failed", Err: r.err.Error()}
		}
		e.orderWaiters = nil
		return
	}
	o, _ := m.order(e, now)
	e.disk = r.info
	e.st = persisted{Domains: r.info.Domains, Directory: m.cfg.Directory, Issued: &issuedSpec{KeyType: r.info.KeyType, Profile: o.Profile},
		LastAttempt: now, LastSuccess: now, UnusedSince: e.st.UnusedSince, History: e.st.History}
	m.record(e, Event{Kind: "issued", Serial: r.info.Serial, Detail: e.orderSource, TookMS: r.took.Milliseconds()})
	m.saveState(e)
	m.log.Info("certificate obtained and written", "cert", e.name, "domains", strings.Join(r.info.Domains, ","),
		"serial", r.info.Serial, "not_after", r.info.NotAfter.Format(time.RFC3339), "reason", e.orderSource,
		"preflight_ms", r.pre.Milliseconds(), "lego_ms", r.took.Milliseconds())
	e.deployRetryAt, e.deployFailures = time.Time{}, 0
	e.deployWaiters = append(e.deployWaiters, e.orderWaiters...)
	e.orderWaiters = nil
	e.deployWaitFP, e.deployWaitNoOrder = r.info.Fingerprint, false
	if e.want == nil {
		// Renewed in its grace period: nobody waits for a reload.
		for _, w := range e.deployWaiters {
			w <- RenewResult{Name: e.name, Ordered: true, Serial: r.info.Serial, NotAfter: r.info.NotAfter, Message: "certificate issued and written (unused: no reload)"}
		}
		e.deployWaiters, e.deployWaitFP = nil, ""
	}
}

func (m *Manager) renew(r renewReq) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	e, ok := m.certs[r.name]
	var o Order
	if ok {
		o, ok = m.order(e, now)
	}
	if !ok {
		r.reply <- RenewResult{Name: r.name, Err: fmt.Sprintf("no certificate named %q is wanted or renewed (see edgecert status)", r.name)}
		return
	}
	if !r.force && !e.ordering {
		need, _ := m.needsOrder(e, o, now)
		if !need && e.want != nil && e.deployedFP != e.disk.Fingerprint {
			// Current on the volume but not proven served (say, the proxy's
			// config was broken and has been fixed): retry the reload now
			// instead of at the end of its backoff. No order.
			e.deployRetryAt = time.Time{}
			if e.deployWaitFP != e.disk.Fingerprint {
				e.deployWaitFP, e.deployWaitNoOrder = e.disk.Fingerprint, true
			}
			e.deployWaiters = append(e.deployWaiters, r.reply)
			return
		}
		if !need {
			at, src := e.renewal()
			r.reply <- RenewResult{Name: e.name, Serial: e.disk.Serial, NotAfter: e.disk.NotAfter,
				Message: fmt.Sprintf("not due; renews at %s (%s); use --force to renew now", at.Format(time.RFC3339), src)}
			return
		}
	}
	e.force = true
	e.forceWaiters = append(e.forceWaiters, r.reply)
}

// reply answers every waiter of e with res.
func (e *entry) reply(res RenewResult) {
	for _, ws := range [][]chan RenewResult{e.forceWaiters, e.orderWaiters, e.deployWaiters} {
		for _, w := range ws {
			w <- res
		}
	}
	e.forceWaiters, e.orderWaiters, e.deployWaiters = nil, nil, nil
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// CertStatus is one certificate as `edgecert status --json` shows it.
type CertStatus struct {
	Name        string     `json:"name"`
	Domains     []string   `json:"domains"`
	State       string     `json:"state"` // pending, placeholder, valid, renewing, failing, unused
	Containers  []string   `json:"containers"`
	KeyType     string     `json:"key_type,omitempty"`
	Profile     string     `json:"profile,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	Issuer      string     `json:"issuer,omitempty"`
	NotBefore   time.Time  `json:"not_before,omitzero"`
	NotAfter    time.Time  `json:"not_after,omitzero"`
	RenewAt     time.Time  `json:"renew_at,omitzero"`
	RenewSource string     `json:"renew_source,omitempty"` // ari, ratio, emergency, forced, retry
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
	Waiting     string     `json:"waiting,omitempty"` // why a due order has not started
	Phase       string     `json:"phase,omitempty"`   // the order in flight: preflight, ordering, writing
	History     []Event    `json:"history"`           // newest last
}

// Status returns every certificate the Manager knows, sorted by name.
func (m *Manager) Status() []CertStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]CertStatus, 0, len(m.certs))
	for _, e := range m.certs {
		out = append(out, m.statusOf(e, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// statusOf describes e. m.mu is held.
func (m *Manager) statusOf(e *entry, now time.Time) CertStatus {
	s := CertStatus{Name: e.name, LastAttempt: e.st.LastAttempt, LastSuccess: e.st.LastSuccess, LastError: e.st.LastError,
		Permanent: e.st.Permanent, Failures: e.st.Failures, DeployError: e.deployErr, LastDeploy: e.lastDeploy,
		Containers: []string{}, ARI: e.st.ARI, ARIError: e.st.ARIError, UnusedSince: e.st.UnusedSince, Phase: e.phase,
		History: slices.Clone(e.st.History)}
	o, active := m.order(e, now)
	if e.want != nil {
		s.Domains, s.Containers = e.want.Domains, e.want.Containers
	} else if e.disk != nil {
		s.Domains = e.disk.Domains
	}
	if active {
		s.KeyType, s.Profile = o.KeyType, o.Profile
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
	if e.ordering {
		s.RenewSource = e.orderSource
	}
	if e.want == nil && !e.st.UnusedSince.IsZero() {
		s.RenewedTill = e.st.UnusedSince.Add(m.cfg.UnusedGrace)
		if !active {
			s.RenewAt, s.RenewSource = time.Time{}, ""
		}
	}
	if active && !e.ordering && m.hold != "" {
		if need, _ := m.needsOrder(e, o, now); need {
			s.Waiting = m.hold
		}
	}
	switch {
	case e.want == nil:
		s.State = "unused"
	case e.st.LastError != "" || e.deployErr != "":
		s.State = "failing"
	case e.disk == nil:
		s.State = "pending"
	case e.disk.Placeholder:
		s.State = "placeholder"
	case e.ordering:
		s.State = "renewing"
	default:
		s.State = "valid"
	}
	return s
}
