package acme

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// ManagerConfig tunes the Manager and names its collaborators.
type ManagerConfig struct {
	Directory      string // the CA's directory URL; a certificate from another CA is re-ordered
	StateDir       string
	MaxOrders      int           // orders in flight at once across all certificates
	DefaultKeyType string        // key type when a Want names none (default ec256)
	DefaultProfile string        // profile when a Want names none ("" = the CA's default)
	UnusedGrace    time.Duration // how long a certificate no container wants is still renewed (default 7 days)
	// PreflightWait bounds how long an order waits for its preflight check
	// (default 30s): long enough for a proxy that is still starting.
	PreflightWait time.Duration
	FlatLinks     bool // also write nginx-proxy's <domain>.crt/.key/.chain.pem links
	// ReuseKey orders each certificate for the key it has on the volume
	// (placeholder included) when that key is of the wanted type: a proxy
	// that opens the certificate and the key per handshake then never pairs
	// a new certificate with an old key at a swap.
	ReuseKey bool
	// DNSConfig fingerprints the DNS-01 configuration (see Order.DNSConfig).
	DNSConfig string
	// ForcedLimit bounds forced renewals per certificate in 7 days; 0: no bound.
	ForcedLimit int
	// Swaps, when set, is taken around each new pair's swap; the proxies'
	// config tests and reloads hold it shared (signal.Options.Files), so
	// that a proxy never reads a pair's two files across a swap. A swap
	// waits for them at most swapWait.
	Swaps swapLock
	// DeployTimeout is how long a deployment may run before it counts as
	// failed (default 2m): a Deployer that never returns must not leave a
	// certificate "deploying", unreported, for good.
	DeployTimeout time.Duration
	// Redact is applied to every error the Manager's work brings back
	// before it is kept (state, status, history, notices): errors from the
	// CA, DNS providers or the engine may carry a secret. nil: none.
	Redact func(string) string
	// Rollbacks, in cluster mode, shares an operator's rollback with the
	// other hosts; nil: one host.
	Rollbacks rollbackPublisher
	// OrderTimeout bounds one order as a whole (default 15m): waiting for
	// the cluster's lock, DNS records and their propagation, validation,
	// finalize. Past it the order fails (and is retried on the schedule);
	// a provider's program still running is killed.
	OrderTimeout time.Duration

	Store     *Store
	Issuer    issuer      // orders certificates
	DryRun    issuer      // the dry-run CA; nil: renew --dry-run is refused
	Deployer  Deployer    // makes the proxies serve a new certificate
	Preflight preflighter // checked before every order; nil: none
	Events    EventSink   // hears every history event; nil: none
	Log       *slog.Logger
	Now       func() time.Time // nil: time.Now
}

var deployBackoff = []time.Duration{15 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}

// unservedRecheck is how long a certificate no proxy serves the names of
// (ErrUnserved) waits for its next check when nothing else brings one (a
// proxy proving another certificate, or renew): a server block added
// without a reload of nginx is found within the hour, at the cost of one
// quick reload an hour while there is none.
const unservedRecheck = time.Hour

// Manager runs the certificate lifecycle. Create it with NewManager, feed it
// with Update, Hold and Reprove, and run it with Run. Its loop is the only
// code that changes certificate state: the other methods hand it messages
// (Update, Hold, Reprove, Renew) or read a copy (Status), and are safe to
// call from any goroutine.
type Manager struct {
	cfg  ManagerConfig
	def  defaults
	log  *slog.Logger
	now  func() time.Time
	sink EventSink

	in      inbox
	renews  chan renewReq
	results chan result
	wake    chan struct{}

	mu        sync.Mutex // guards what follows: the loop writes, Status reads
	certs     map[string]*entry
	synced    bool
	volume    chan []loaded // the volume read at Run's start: taken by the first preload (the loop's own)
	recheck   bool          // a proof succeeded: failed and unserved deployments are tried again now
	slots     chan struct{} // one per order in flight, dry runs included: at most MaxOrders
	hold      string        // why orders wait, "" if they need not
	conflicts []Conflict    // wishes refused by the last reconcile
	lastWants []Want        // what the last reconcile was given
	// unclaimed are offers (Refresh) for names not wanted yet, latest per
	// name: taken when the name is.
	unclaimed map[string]Offered
}

// entry is one certificate as the loop knows it.
type entry struct {
	name  string
	want  *Want  // nil: no running container wants it
	group string // the group it was last wanted for, kept while unwanted
	disk  *Info  // what is current on the volume, nil if nothing
	st    persisted

	// The order.
	ordering        bool
	orderStarted    time.Time
	orderReason     string
	phase           Phase
	force           bool      // order now, past any wait (renew)
	forced          bool      // ... because an operator forced it (counted against ForcedLimit)
	refresh         bool      // the issuer has a newer certificate (another host ordered it): take it
	heldUntil       time.Time // the issuer said it cannot order now (ErrHeld): not before then
	refreshRollback bool      // ... and it is a rollback done on another host
	refreshAt       time.Time // a take that failed (etcd unreachable a moment): taken again then, not at once
	polling         bool      // an ARI request is in flight

	// An issued pair not (yet) on the volume: its write is retried, it is
	// never ordered again.
	pending       *pendingPair
	writing       bool
	writeErr      string
	writeFailures int
	writeRetryAt  time.Time

	// The deployment.
	deploying      bool
	deployStarted  time.Time
	deploySeq      int    // counts deployments; a result of an abandoned one is ignored
	deployedFP     string // fingerprint proven served, "" if not (yet)
	combinedFP     string // the version known to have combined.pem, "" if none
	deployErr      string
	deployFailures int
	deployRetryAt  time.Time
	unserved       string // no proxy serves its names (ErrUnserved): the hint
	flatLinks      string // the names whose nginx-proxy links were written (FlatLinks)
	lastDeploy     time.Time

	wait waiters
}

// swapLock is what the Manager needs of the lock shared with reloads.
type swapLock interface {
	TryLock() bool
	Unlock()
}

// swapWait bounds how long a swap waits for reloads that read the files: a
// proxy stuck in its config test must not hold back every certificate.
const swapWait = 5 * time.Second

// heldRecheck is how long after an order the issuer held (ErrHeld) the
// need is looked at again, if the hold has not reached the loop by then.
const heldRecheck = 5 * time.Second

// NewManager returns a Manager.
func NewManager(cfg ManagerConfig) *Manager {
	cfg.MaxOrders = max(cfg.MaxOrders, 1)
	if cfg.PreflightWait <= 0 {
		cfg.PreflightWait = 30 * time.Second
	}
	if cfg.UnusedGrace <= 0 {
		cfg.UnusedGrace = 7 * 24 * time.Hour
	}
	if cfg.DeployTimeout <= 0 {
		cfg.DeployTimeout = 2 * time.Minute
	}
	if cfg.OrderTimeout <= 0 {
		cfg.OrderTimeout = 15 * time.Minute
	}
	cfg.DefaultKeyType = cmp.Or(cfg.DefaultKeyType, KeyTypes[0])
	m := &Manager{
		cfg: cfg, log: cmp.Or(cfg.Log, slog.Default()), now: cfg.Now, sink: cfg.Events,
		def: defaults{KeyType: cfg.DefaultKeyType, Profile: cfg.DefaultProfile, UnusedGrace: cfg.UnusedGrace, Directory: cfg.Directory,
			DNSConfig: cfg.DNSConfig, OrderTimeout: cfg.OrderTimeout},
		renews:  make(chan renewReq),
		results: make(chan result),
		wake:    make(chan struct{}, 1),
		certs:   map[string]*entry{}, unclaimed: map[string]Offered{},
		slots: make(chan struct{}, cfg.MaxOrders),
	}
	if cfg.Now == nil {
		m.now = time.Now
	}
	return m
}

// Run is the Manager's loop. It returns when ctx ends, after every order,
// ARI request and deployment it started has finished.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// The volume is read while the first list of containers is made.
	m.mu.Lock()
	if !m.synced {
		vol := make(chan []loaded, 1)
		wg.Go(func() { vol <- m.readVolume() })
		m.volume = vol
	}
	m.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		wait := m.launchDue(ctx, &wg)
		m.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			m.finish(&wg)
			return nil
		case <-m.wake:
			m.takeInbox()
		case r := <-m.renews:
			m.takeInbox() // a hold said before the request counts for it
			m.renew(ctx, &wg, r)
		case r := <-m.results:
			m.apply(r)
			m.applyWaiting()
		case <-timer.C:
		}
	}
}

// applyWaiting takes in the results already waiting to be taken: a
// thousand deployments proven by one reload (a restart) cost one look at
// what is due, not a thousand looks at a thousand certificates.
func (m *Manager) applyWaiting() {
	for {
		select {
		case r := <-m.results:
			m.apply(r)
		default:
			return
		}
	}
}

// finish takes the results of the work still running until all of it has
// ended (an order past the CA is written and its state saved, not left to
// the next start), then answers every waiting renew request.
func (m *Manager) finish(wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case r := <-m.results:
			// What reached the volume is recorded; what shutdown cut short
			// (a preflight, a reload, an ARI request) leaves no trace.
			if (r.kind == orderDone || r.kind == writeDone) && !errors.Is(r.err, context.Canceled) {
				m.apply(r)
			}
			continue
		case <-done:
		}
		break
	}
	m.mu.Lock()
	for _, e := range m.certs {
		e.wait.all(RenewResult{Name: e.name, Err: "edgecert is shutting down"})
	}
	m.mu.Unlock()
}

// Status returns every certificate the Manager knows, sorted by name.
func (m *Manager) Status() []CertStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]CertStatus, 0, len(m.certs))
	for _, e := range m.certs {
		out = append(out, describe(e, m.def, m.hold, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Has says whether the Manager knows a certificate called name.
func (m *Manager) Has(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.certs[name]
	return ok
}

// record appends an event to e's history (the caller saves the state) and
// tells the sink. m.mu is held.
func (m *Manager) record(e *entry, ev Event) {
	ev.At = m.now()
	e.st.appendEvent(ev)
	if m.sink != nil {
		m.sink.CertEvent(e.name, ev, describe(e, m.def, m.hold, ev.At))
	}
}

// save writes e's state; a failure is logged, and the state is written again
// at its next change.
func (m *Manager) save(e *entry) {
	if err := saveState(m.cfg.StateDir, e.name, e.st); err != nil {
		m.log.Error("cannot save certificate state", "cert", e.name, "err", err)
	}
}

// launchDue starts what is due and returns how long to sleep. m.mu is held.
func (m *Manager) launchDue(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	if !m.synced || ctx.Err() != nil {
		return time.Hour
	}
	if m.recheck {
		m.recheck = false
		for _, e := range m.certs {
			if (e.deployErr != "" || e.unserved != "") && !e.deploying {
				e.deployRetryAt = time.Time{}
			}
		}
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
	var deploys []*entry
	for _, e := range m.certs {
		o, active := wish(e, m.def, now)
		if !active {
			continue
		}
		real := e.disk != nil && !e.disk.Placeholder
		if e.pending != nil {
			// Issued but not on the volume: write it, never order it again.
			switch {
			case e.writing || e.ordering:
			case now.Before(e.writeRetryAt):
				next = earliest(next, e.writeRetryAt)
			default:
				m.startWrite(ctx, wg, e)
			}
		} else if !e.ordering {
			due, reason, wake := orderNow(e, o, m.cfg.Directory, now)
			if due {
				orders = append(orders, cand{e, o, !real, reason})
			} else if !wake.IsZero() {
				next = earliest(next, wake)
			}
		}
		if real && !e.polling {
			if now.Before(e.st.ARINextPoll) {
				next = earliest(next, e.st.ARINextPoll)
			} else {
				m.startARI(ctx, wg, e)
			}
		}
		if e.deploying {
			if limit := e.deployStarted.Add(m.cfg.DeployTimeout); now.Before(limit) {
				next = earliest(next, limit)
			} else {
				m.abandonDeploy(e)
			}
		}
		if e.want != nil && real && !e.deploying && e.deployedFP != e.disk.Fingerprint {
			if now.Before(e.deployRetryAt) {
				next = earliest(next, e.deployRetryAt)
			} else {
				deploys = append(deploys, e)
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
	queued := len(orders) // due but not started: they will complete soon too
	for _, c := range orders {
		if m.hold != "" {
			queued = 0 // held: not about to complete
			break
		}
		select {
		case m.slots <- struct{}{}: // released when the order's result is applied
		default:
			// Every slot is taken; a finishing order wakes the loop.
			m.startDeploys(ctx, wg, deploys, queued)
			return max(next.Sub(now), 10*time.Millisecond)
		}
		m.startOrder(ctx, wg, c.e, c.o, c.reason)
		queued--
	}
	m.startDeploys(ctx, wg, deploys, queued)
	return max(next.Sub(now), 10*time.Millisecond)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
