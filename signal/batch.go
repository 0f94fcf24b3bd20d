package signal

import (
	"context"
	"errors"
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
type Batcher struct {
	r     *Reloader
	bound time.Duration

	mu      sync.Mutex
	proxies []Proxy
	pending []pending
	opened  time.Time           // when the gathering batch got its first certificate
	settled bool                // a certificate came with nothing more in flight: flush when quiet
	timer   *time.Timer         // flushes the gathering batch
	batch   int                 // which batch is gathering: a timer of an earlier one flushes nothing
	reports map[string][]Report // by certificate name: the last report of each proxy
	onRep   func(Report)        // hears every report (metrics); nil: nobody
}

// quietGap gathers deployments handed over together (each arrives on its
// own goroutine) once nothing more is in flight.
const quietGap = 2 * time.Millisecond

type pending struct {
	cert Cert
	done chan error
}

// NewBatcher returns a Batcher whose batches wait at most bound for
// orders in flight. onReport (nil: none) hears every reload report, on the
// reloading goroutine: it must not block.
func NewBatcher(r *Reloader, bound time.Duration, onReport func(Report)) *Batcher {
	return &Batcher{r: r, bound: bound, reports: map[string][]Report{}, onRep: onReport}
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
	d.pending = append(d.pending, pending{cert: c, done: done})
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

// flush reloads every proxy once for the gathered batch, unless that
// batch was flushed already.
func (d *Batcher) flush(ctx context.Context, which int) {
	d.mu.Lock()
	if d.timer == nil || d.batch != which {
		d.mu.Unlock()
		return
	}
	batch := d.pending
	d.pending, d.timer = nil, nil
	proxies := slices.Clone(d.proxies)
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}

	certs := make([]Cert, len(batch))
	for i, p := range batch {
		certs[i] = p.cert
	}
	// Each proxy reloads once, for the certificates of its group.
	reports := make([]*Report, len(proxies))
	var wg sync.WaitGroup
	for i, p := range proxies {
		mine := slices.DeleteFunc(slices.Clone(certs), func(c Cert) bool { return !p.Serves(c.Group) })
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := d.r.Ensure(ctx, p, mine)
			reports[i] = &rep
			if d.onRep != nil {
				d.onRep(rep)
			}
		}()
	}
	wg.Wait()

	byCert := map[string][]Report{}
	for _, r := range reports {
		if r == nil {
			continue
		}
		for _, name := range r.Certs {
			byCert[name] = append(byCert[name], *r)
		}
	}
	d.mu.Lock()
	for _, c := range certs {
		d.reports[c.Name] = byCert[c.Name]
	}
	d.mu.Unlock()
	for _, p := range batch {
		var errs []error
		for _, r := range byCert[p.cert.Name] {
			if err := r.ErrFor(p.cert.Name); err != nil {
				errs = append(errs, err)
			}
		}
		p.done <- errors.Join(errs...)
	}
}
