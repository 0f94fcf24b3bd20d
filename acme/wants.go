package acme

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// What containers want, against what is known of each certificate: the
// wanted set reconciled into entries, each entry loaded from the volume and
// the state directory the first time, and the wishes refused.

// Conflict is a wish refused because its certificate name is bound to
// other names (see boundElsewhere).
type Conflict struct {
	Name       string
	Containers []string
	Err        string
}

// Conflicts returns the wishes the last update refused.
func (m *Manager) Conflicts() []Conflict {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.conflicts)
}

// reconcile makes the entries match the wanted set. m.mu is held.
func (m *Manager) reconcile(ws []Want) {
	if !m.synced {
		// Certificates left on the volume by an earlier run are known too.
		names, err := m.cfg.Store.Names()
		if err != nil {
			m.log.Error("cannot list the certificate volume", "err", err)
		}
		for _, n := range append(names, pendingNames(m.cfg.StateDir)...) {
			m.entry(n)
		}
		m.synced = true
	}
	m.lastWants = ws
	wanted := map[string]bool{}
	m.conflicts = nil
	for i := range ws {
		w := ws[i]
		e := m.entry(w.Name)
		if why := boundElsewhere(e, w, m.def, m.now()); why != "" {
			if e.want == nil || !slices.Equal(e.want.Containers, w.Containers) {
				m.log.Error("certificate name taken; this wish is ignored", "cert", w.Name, "container", strings.Join(w.Containers, ","), "err", why)
			}
			m.conflicts = append(m.conflicts, Conflict{Name: w.Name, Containers: w.Containers, Err: why})
			continue
		}
		wanted[w.Name] = true
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
			m.record(e, Event{Kind: EventWanted, Detail: strings.Join(w.Containers, ",")})
			m.save(e)
		}
		if e.disk == nil {
			info, err := m.cfg.Store.WritePlaceholder(w.Name, w.Domains, w.CombinedPEM)
			if err != nil {
				m.log.Error("cannot write placeholder certificate", "cert", w.Name, "err", err)
				continue
			}
			e.disk = info
			m.log.Info("placeholder certificate written", "cert", w.Name, "domains", strings.Join(w.Domains, ","))
		}
		if w.CombinedPEM && e.disk != nil && e.combinedFP != e.disk.Fingerprint {
			// A proxy asks for combined.pem: the current version gets one
			// (new versions are written with it); looked at once per version.
			if err := m.cfg.Store.EnsureCombined(w.Name); err != nil {
				m.log.Error("cannot write combined.pem", "cert", w.Name, "err", err)
			} else {
				e.combinedFP = e.disk.Fingerprint
			}
		}
		if key := strings.Join(w.Domains, ","); m.cfg.FlatLinks && e.flatLinks != key {
			// The links follow new versions by themselves: written once per
			// set of names, not at every look at the containers.
			if err := m.cfg.Store.WriteFlatLinks(w.Name, w.Domains); err != nil {
				m.log.Error("cannot write nginx-proxy links", "cert", w.Name, "err", err)
			} else {
				e.flatLinks = key
			}
		}
	}
	for _, e := range m.certs {
		if wanted[e.name] {
			continue
		}
		if e.want != nil || e.st.UnusedSince.IsZero() {
			e.st.UnusedSince = m.now()
			m.record(e, Event{Kind: EventUnused})
			m.save(e)
			m.log.Info("certificate no longer wanted by any container; files kept", "cert", e.name,
				"renewed_until", e.st.UnusedSince.Add(m.cfg.UnusedGrace).Format(time.RFC3339))
		}
		e.want = nil
	}
}

// entry returns the entry for name, loading it from the volume and the state
// directory the first time. m.mu is held.
func (m *Manager) entry(name string) *entry {
	if e, ok := m.certs[name]; ok {
		return e
	}
	return m.adopt(m.load(name))
}

// loaded is what the volume and the state directory hold for a name, read
// without the Manager's lock.
type loaded struct {
	name    string
	disk    *Info
	st      persisted
	stErr   error
	pending *pendingPair
	pendErr error
}

// load reads name's certificate, state and pending pair. It takes no lock
// and changes nothing the Manager holds (but a damaged current version,
// which it replaces with the newest usable one, as the volume's owner).
func (m *Manager) load(name string) loaded {
	l := loaded{name: name}
	info, err := m.cfg.Store.Read(name)
	if err != nil && m.cfg.Store.Has(name) {
		// The current version is damaged or gone: an older one that is
		// still valid beats a placeholder and a new order.
		bad := err
		if info, err = m.cfg.Store.Recover(name); err == nil {
			m.log.Warn("the current certificate cannot be read; the newest usable version is current again",
				"cert", name, "serial", info.Serial, "version", info.Version, "err", bad)
		} else {
			m.log.Error("no usable certificate on the volume; a new one will be ordered", "cert", name, "err", bad)
		}
	}
	if err == nil {
		l.disk = info
	}
	l.st, l.stErr = loadState(m.cfg.StateDir, name)
	l.pending, l.pendErr = loadPending(m.cfg.StateDir, name)
	return l
}

// adopt makes l name's entry. m.mu is held.
func (m *Manager) adopt(l loaded) *entry {
	name := l.name
	e := &entry{name: name, disk: l.disk, st: l.st}
	if l.stErr != nil {
		m.log.Error("cannot read certificate state; starting afresh", "cert", name, "err", l.stErr)
	}
	m.adoptPending(e, l.pending, l.pendErr)
	if e.disk != nil && !e.disk.Placeholder && e.st.Fingerprint != "" && e.st.Fingerprint != e.disk.Fingerprint {
		// The state describes another certificate than the volume holds (a
		// crash between the two writes, or files put back by hand): what it
		// says of that one (its CA, profile, ARI window) must not make the
		// one on the volume look due or wrong. The volume is the truth.
		m.log.Warn("certificate state describes another certificate than the volume holds; it is reset to the volume's",
			"cert", name, "serial", e.disk.Serial)
		e.st.Fingerprint, e.st.Domains, e.st.Directory, e.st.Issued = e.disk.Fingerprint, e.disk.Domains, "", nil
		e.st.ARI, e.st.ARINextPoll, e.st.ARIError = nil, time.Time{}, ""
		m.save(e)
	}
	m.certs[name] = e
	return e
}

// preload reads, without the Manager's lock, what the volume and the state
// directory hold for the wanted names not known yet (and, the first time,
// every name on the volume, as read by readVolume when Run began: a start
// reads the volume while the engine lists the containers): at a start with
// a thousand certificates, status and the other callers do not wait on the
// disk. What it read is adopted under the lock, unless the name was loaded
// meanwhile. Only the loop calls it.
func (m *Manager) preload(ws []Want) []loaded {
	m.mu.Lock()
	var names []string
	for _, w := range ws {
		if m.certs[w.Name] == nil {
			names = append(names, w.Name)
		}
	}
	synced := m.synced
	m.mu.Unlock()
	var out []loaded
	if !synced {
		if m.volume != nil {
			out, m.volume = <-m.volume, nil
		} else {
			out = m.readVolume()
		}
		read := map[string]bool{}
		for _, l := range out {
			read[l.name] = true
		}
		names = slices.DeleteFunc(names, func(n string) bool { return read[n] })
	}
	return append(out, m.loadAll(names)...)
}

// readVolume reads every certificate on the volume and every pending pair:
// a start's first step.
func (m *Manager) readVolume() []loaded {
	began := time.Now()
	vol, _ := m.cfg.Store.Names() // reconcile logs an error listing the volume
	out := m.loadAll(append(vol, pendingNames(m.cfg.StateDir)...))
	m.log.Debug("certificate volume read", "certs", len(out), "took_ms", time.Since(began).Milliseconds())
	return out
}

// loadAll loads names (each once), a few at a time: reading and parsing
// a thousand certificates is work for every core.
func (m *Manager) loadAll(names []string) []loaded {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	out := make([]loaded, len(names))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(loaders, len(names)) {
		wg.Go(func() {
			for i := range next {
				out[i] = m.load(names[i])
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// loaders is how many names loadAll reads at once.
const loaders = 4
