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
// of containers, many renewals at once) into one reload per proxy: each
// Deploy joins the batch that is gathering, and the batch is reloaded and
// proven on every proxy once no certificate has joined for the window, or at
// the latest ten windows after the first one joined.
type Batcher struct {
	r      *Reloader
	window time.Duration

	mu      sync.Mutex
	proxies []Proxy
	pending []pending
	opened  time.Time           // when the gathering batch got its first certificate
	timer   *time.Timer         // flushes the gathering batch
	reports map[string][]Report // by certificate name: the last report of each proxy
	onRep   func(Report)        // hears every report (metrics); nil: nobody
}

type pending struct {
	cert Cert
	done chan error
}

// NewBatcher returns a Batcher that gathers certificates for window before
// reloading. onReport (nil: none) hears every reload report, on the
// reloading goroutine: it must not block.
func NewBatcher(r *Reloader, window time.Duration, onReport func(Report)) *Batcher {
	return &Batcher{r: r, window: window, reports: map[string][]Report{}, onRep: onReport}
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

// Deploy makes every proxy serve c and waits for the proof. It fails if any
// proxy does not serve c; one failing proxy does not stop the others. The
// batch runs under the context of the Deploy that opened it.
func (d *Batcher) Deploy(ctx context.Context, c Cert) error {
	done := make(chan error, 1)
	d.mu.Lock()
	d.pending = append(d.pending, pending{cert: c, done: done})
	switch {
	case d.timer == nil:
		d.opened = time.Now()
		d.timer = time.AfterFunc(d.window, func() { d.flush(ctx) })
	case time.Since(d.opened) < 10*d.window:
		d.timer.Reset(d.window) // still arriving: wait for quiet
	}
	d.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush reloads every proxy once for the gathered batch.
func (d *Batcher) flush(ctx context.Context) {
	d.mu.Lock()
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
