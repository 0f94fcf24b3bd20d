package acme

import (
	"sync"
	"time"
)

// What the watcher and the cluster tell the Manager (the wanted
// certificates, a hold on orders, a call to prove again, a certificate
// another host ordered) goes through its inbox: said at any time, taken by
// the loop whole.

// inbox holds what Update, Hold and Reprove said since the loop last
// looked; the loop takes it whole, so a newer want list replaces an older
// one and the three keep their order.
type inbox struct {
	mu      sync.Mutex
	wants   []Want
	hasWant bool
	hold    string
	hasHold bool
	reprove bool
	refresh []Offered
}

// Update hands the Manager the complete set of wanted certificates. A newer
// set replaces one the loop has not taken yet.
func (m *Manager) Update(ws []Want) {
	m.in.mu.Lock()
	m.in.wants, m.in.hasWant = ws, true
	m.in.mu.Unlock()
	m.poke()
}

// Hold makes new orders wait while reason is not "" (for example: no proxy
// is running to answer HTTP-01, and an order would only burn a failed
// validation). Hold("") releases them.
func (m *Manager) Hold(reason string) {
	m.in.mu.Lock()
	m.in.hold, m.in.hasHold = reason, true
	m.in.mu.Unlock()
	m.poke()
}

// Reprove asks for every current certificate to be proven served again,
// for example because the set of proxies changed.
func (m *Manager) Reprove() {
	m.in.mu.Lock()
	m.in.reprove = true
	m.in.mu.Unlock()
	m.poke()
}

// Offered is a certificate the issuer holds for a name without an order
// (in a cluster, one another host ordered).
type Offered struct {
	Name     string
	Serial   string
	NotAfter time.Time
	By       string    // who ordered it, for the log
	At       time.Time // when it was stored
	// Rollback: an operator rolled the certificate back to it on host By:
	// taken although older, and renewal is held here too.
	Rollback bool
}

// Refresh tells of a certificate the issuer holds: when it is newer than
// the volume's (or the volume holds none, or a placeholder), the
// certificate is obtained again at once, which the issuer answers without
// an order. A rollback hold or the CA's Retry-After still holds it.
func (m *Manager) Refresh(o Offered) {
	m.in.mu.Lock()
	m.in.refresh = append(m.in.refresh, o)
	m.in.mu.Unlock()
	m.poke()
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// takeInbox applies what Update, Hold and Reprove said, in that order of
// importance: the hold first, so no order starts for a want it holds.
func (m *Manager) takeInbox() {
	m.in.mu.Lock()
	in := inbox{wants: m.in.wants, hasWant: m.in.hasWant, hold: m.in.hold, hasHold: m.in.hasHold, reprove: m.in.reprove,
		refresh: m.in.refresh}
	m.in.wants, m.in.hasWant, m.in.hasHold, m.in.reprove, m.in.refresh = nil, false, false, false, nil
	m.in.mu.Unlock()
	var pre []loaded
	if in.hasWant {
		pre = m.preload(in.wants)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range pre {
		if m.certs[l.name] == nil {
			m.adopt(l)
		}
	}
	if in.hasHold && in.hold != m.hold {
		if in.hold != "" {
			m.log.Warn("orders wait", "reason", in.hold)
		}
		m.hold = in.hold
	}
	if in.reprove {
		for _, e := range m.certs {
			e.deployedFP, e.deployRetryAt = "", time.Time{}
		}
	}
	if in.hasWant {
		m.reconcile(in.wants)
	}
	offers := in.refresh
	if in.hasWant {
		// Offers that came before the wish they are for (the cluster may
		// hear of a certificate before the Manager of the container).
		for name, o := range m.unclaimed {
			if m.certs[name] != nil {
				offers = append(offers, o)
				delete(m.unclaimed, name)
			}
		}
	}
	for _, o := range offers {
		e := m.certs[o.Name]
		switch {
		case e == nil:
			m.unclaimed[o.Name] = o // not wanted here (yet): taken if it is
			continue
		case o.Rollback:
			if e.disk != nil && e.disk.Serial == o.Serial {
				continue // already served here
			}
			m.log.Warn("rolled back on another host; taking it and holding renewal", "cert", o.Name, "serial", o.Serial, "by", o.By)
			e.refresh, e.refreshRollback, e.refreshAt = true, true, time.Time{}
			continue
		case !offerNewer(e.disk, o):
			continue // the volume's is as new
		case e.st.Hold != nil && o.At.After(e.st.Hold.At):
			// Renewed on another host after the rollback: the hold is over
			// for the cluster.
			m.log.Info("renewed on another host after the rollback; hold released", "cert", e.name, "serial", o.Serial, "by", o.By)
			e.st.Hold = nil
			m.record(e, Event{Kind: EventHoldReleased, Serial: o.Serial, Detail: "renewed on " + o.By})
			m.save(e)
		}
		m.log.Info("the issuer has a newer certificate; taking it", "cert", o.Name, "serial", o.Serial, "by", o.By)
		e.refresh, e.refreshAt = true, time.Time{}
	}
}
