package signal

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"
)

// Batcher coalesces certificates that change together (start-up, a burst
// of containers, many renewals at once) into one reload per proxy, without
// a fixed wait: a certificate handed over when no other order is about to
// complete is reloaded at once (after quietGap, for the deployments handed
// over in the same instant); one handed over while others are in flight
// waits for them, but never longer than the bound after the batch opened.
// Each proxy has one reload at a time: what is flushed while it reloads
// waits in its queue and goes into its next reload, whole, so a long burst
// gives back-to-back reloads, each covering all that came meanwhile, and no
// deployment spends its deadline waiting behind another. A proxy whose
// reload is slow (a configuration of a thousand server blocks takes nginx
// tens of seconds to load, twice: config test and reload) rests before its
// next one (restAfter): it spends at most half its time reloading, what
// comes meanwhile goes into fewer reloads, and the longer a burst keeps it
// reloading back to back, the longer it rests. Slowness is measured on the
// proxy's own work (config test, signal, new workers), never on the wait
// for handshakes, which says nothing of its size.
type Batcher struct {
	r        *Reloader
	bound    time.Duration
	restFrom time.Duration // a reload that took this long or longer is followed by a rest as long

	mu      sync.Mutex
	proxies []Proxy
	pending []*pending
	opened  time.Time              // when the gathering batch got its first certificate
	settled bool                   // a certificate came with nothing more in flight: flush when quiet
	timer   *time.Timer            // flushes the gathering batch
	batch   int                    // which batch is gathering: a timer of an earlier one flushes nothing
	queues  map[string]*proxyQueue // by proxy ID: flushed certificates waiting for its next reload
	reports map[string][]Report    // by certificate name: the last report of each proxy
	byProxy map[string]ProxyReload // by proxy ID: its last reload, and the rest it takes
	onRep   func(Report)           // hears every report (metrics); nil: nobody
}

// quietGap gathers deployments handed over together (each arrives on its
// own goroutine) once nothing more is in flight.
const quietGap = 2 * time.Millisecond

// RestFrom is how long a reload must take before the proxy rests as long
// after it: far above what a proxy of a few hundred server blocks takes, so
// a small proxy is never held back.
const RestFrom = 5 * time.Second

// pending is one Deploy: done gets the joined errors once every proxy that
// serves the certificate has reported (left counts them down).
type pending struct {
	cert Cert
	done chan error
	left int
	errs []error
}

// proxyQueue is one proxy's certificates waiting for its next reload;
// running says a goroutine is reloading it and will take them.
type proxyQueue struct {
	proxy     Proxy
	certs     []*pending
	running   bool
	restUntil time.Time     // no reload before then: the last one was slow
	spell     time.Duration // how long its busy spell has lasted: slow reloads' own work, rests
}

// NewBatcher returns a Batcher whose batches wait at most bound for
// orders in flight. onReport (nil: none) hears every reload report, on the
// reloading goroutine: it must not block.
func NewBatcher(r *Reloader, bound time.Duration, onReport func(Report)) *Batcher {
	return &Batcher{r: r, bound: bound, restFrom: RestFrom, queues: map[string]*proxyQueue{}, reports: map[string][]Report{}, byProxy: map[string]ProxyReload{}, onRep: onReport}
}

// SetProxies replaces the set of proxies and says whether it changed.
func (d *Batcher) SetProxies(ps []Proxy) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if reflect.DeepEqual(d.proxies, ps) {
		return false
	}
	d.proxies = slices.Clone(ps)
	return true
}

// Proxies returns the current proxies.
func (d *Batcher) Proxies() []Proxy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.proxies)
}

// ProxyReload is a proxy's last reload as its own status shows it, and
// when its rest after a slow reload ends (zero: none).
type ProxyReload struct {
	Last      Report    `json:"last"`
	RestUntil time.Time `json:"rest_until,omitzero"`
}

// ProxyReloads returns each proxy's last reload, by proxy ID.
func (d *Batcher) ProxyReloads() map[string]ProxyReload {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.byProxy)
}

// Reports returns the last reload report of each proxy for certificate name.
func (d *Batcher) Reports(name string) []Report {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reports[name])
}

// Deploy makes every proxy serve c and waits for the proof. more says that
// other certificates are about to be handed over (orders in flight): the
// batch then waits for them, up to the bound. It fails if any proxy does
// not serve c; one failing proxy does not stop the others. The batch runs
// under the context of the Deploy that opened it.
func (d *Batcher) Deploy(ctx context.Context, c Cert, more bool) error {
	done := make(chan error, 1)
	d.mu.Lock()
	d.pending = append(d.pending, &pending{cert: c, done: done})
	if d.timer == nil {
		d.opened, d.settled = time.Now(), false
		d.batch++
		batch := d.batch
		d.timer = time.AfterFunc(d.bound, func() { d.flush(ctx, batch) })
	}
	if !more {
		d.settled = true
	}
	if d.settled {
		// Nothing more is coming: flush once the deployments of this
		// instant are in, never after the bound.
		d.timer.Reset(min(quietGap, max(0, d.bound-time.Since(d.opened))))
	}
	d.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush hands the gathered batch to the queue of every proxy that serves
// its certificates, unless that batch was flushed already.
func (d *Batcher) flush(ctx context.Context, which int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer == nil || d.batch != which {
		return
	}
	batch := d.pending
	d.pending, d.timer = nil, nil
	for _, p := range batch {
		var views []Report // what status shows stays for the proxies that still serve it
		for _, px := range d.proxies {
			if !px.Serves(p.cert.Group) {
				continue
			}
			p.left++
			q := d.queues[px.ID]
			if q == nil {
				q = &proxyQueue{}
				d.queues[px.ID] = q
			}
			q.proxy = px
			q.certs = append(q.certs, p)
			for _, r := range d.reports[p.cert.Name] {
				if r.Container == px.Name {
					views = append(views, r)
				}
			}
		}
		d.reports[p.cert.Name] = views
		if p.left == 0 {
			p.done <- nil // no proxy serves it: nothing to prove
		}
	}
	for id, q := range d.queues {
		if len(q.certs) > 0 && !q.running {
			q.running = true
			go d.reloadQueue(ctx, id)
		}
	}
}

// reloadQueue reloads one proxy, again and again, for all its queue holds,
// until the queue is empty. Each round is bounded by the Reloader's
// timeout, and follows the proxy's rest after a slow one; the goroutine
// ends with the empty queue.
func (d *Batcher) reloadQueue(ctx context.Context, id string) {
	for {
		d.mu.Lock()
		q := d.queues[id]
		rested := false // certificates waited for a rest: the busy spell goes on
		if rest := time.Until(q.restUntil); rest > 0 && len(q.certs) > 0 {
			rested = true
			name := q.proxy.Name
			d.mu.Unlock()
			d.r.log.Info("proxy rests before its next reload: its last one was slow", "container", name,
				"rest", rest.Round(time.Millisecond).String())
			t := time.NewTimer(rest)
			select {
			case <-t.C:
			case <-ctx.Done(): // the round ends at once, each deployment told why
				t.Stop()
			}
			d.mu.Lock()
			q.restUntil = time.Time{}
		}
		items := q.certs
		q.certs = nil
		if len(items) == 0 {
			q.running = false
			if !slices.ContainsFunc(d.proxies, func(p Proxy) bool { return p.ID == id }) {
				delete(d.queues, id) // a proxy that is gone
			}
			d.mu.Unlock()
			return
		}
		px := q.proxy
		d.mu.Unlock()

		// The newest deployment of each certificate is what must be served.
		latest := map[string]int{}
		var certs []Cert
		for _, p := range items {
			if i, ok := latest[p.cert.Name]; ok {
				certs[i] = p.cert
				continue
			}
			latest[p.cert.Name] = len(certs)
			certs = append(certs, p.cert)
		}
		rep := d.r.Ensure(ctx, px, certs)
		took := rep.loadTook()
		if d.onRep != nil {
			d.onRep(rep)
		}

		d.mu.Lock()
		if !rested {
			q.spell = 0
		}
		var rest time.Duration
		rest, q.spell = restAfter(rep.Reloaded, took, q.spell, d.restFrom, d.r.opts.Timeout)
		if rest > 0 {
			q.restUntil = time.Now().Add(rest)
		}
		d.byProxy[px.ID] = ProxyReload{Last: rep.ForProxy(), RestUntil: q.restUntil}
		for _, c := range certs {
			views := slices.DeleteFunc(d.reports[c.Name], func(r Report) bool { return r.Container == rep.Container })
			d.reports[c.Name] = append(views, rep.ForCert(c.Name))
		}
		for _, p := range items {
			if err := rep.ErrFor(p.cert.Name); err != nil {
				p.errs = append(p.errs, err)
			}
			if p.left--; p.left == 0 {
				p.done <- errors.Join(p.errs...)
			}
		}
		d.mu.Unlock()
	}
}

// restAfter is the rest a proxy takes after a reload whose own work took
// took, and how long its busy spell will have lasted when that rest ends.
// spell is how long the spell had lasted before this reload (its slow
// reloads' own work and its rests; zero when the reload began on a proxy
// at rest, nothing having waited for a rest). After a fast reload (under
// from) there is none, and the spell ends; after a round that sent no
// signal there is none, and the spell stands; after a slow one, as long as
// the spell has lasted, this reload included: the first of a burst rests as
// long as it took, and each rest after is as long as all that came before
// it, so the rests double. A proxy spends at most half its time reloading,
// and a burst of any length costs it a few reloads (their starts at 0, 2,
// 6, 14 times a reload's time). Never longer than limit (the reload
// timeout: a deployment's deadline counts one rest of at most that).
func restAfter(reloaded bool, took, spell, from, limit time.Duration) (rest, lasted time.Duration) {
	switch {
	case !reloaded:
		return 0, spell
	case took < from:
		return 0, 0
	}
	rest = min(spell+took, limit)
	return rest, spell + took + rest
}
