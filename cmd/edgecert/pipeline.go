package main

import (
	"strings"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// Where the three stages meet. Each stage declares the types it consumes and
// knows nothing of the others, so the few types that cross a boundary exist
// on both sides and are converted here, field by field, in one place
// (pipeline_test.go fails when a field is added on one side only).

// stages are what one snapshot is handed to.
type stages struct {
	manager *acme.Manager
	batcher *signal.Batcher
	holds   *holds
}

// apply feeds one snapshot from dockerwatch to the signal and acme stages:
// the running proxies to signal, the wanted certificates to acme, and to
// acme too whether orders must wait and whether every certificate must be
// proven again.
func (s stages) apply(snap dockerwatch.Desired) {
	var proxies []signal.Proxy
	var stopped []string
	for _, p := range snap.Proxies {
		if !p.Running {
			stopped = append(stopped, p.Name)
			continue
		}
		proxies = append(proxies, toProxy(p))
	}
	// HTTP-01 needs a proxy to serve the token: with proxies labelled but none
	// running (compose is still starting them), an order would only fail.
	hold := ""
	if len(proxies) == 0 && len(stopped) > 0 {
		hold = "no proxy container is running (" + strings.Join(stopped, ", ") + ")"
	}
	s.holds.set("proxies", hold)
	if s.batcher.SetProxies(proxies) {
		// A proxy came, went or restarted: prove every certificate again
		// (by handshake; no signal where it already serves them).
		s.manager.Reprove()
	}
	wants := make([]acme.Want, len(snap.Certs))
	for i, c := range snap.Certs {
		wants[i] = toWant(c)
	}
	s.manager.Update(wants)
}

// toProxy is a running proxy as signal reloads it.
func toProxy(p dockerwatch.Proxy) signal.Proxy {
	return signal.Proxy{ID: p.ID, Name: p.Name, TLSPort: p.TLSPort, Group: p.Group, Starts: p.Starts,
		Signal: p.Signal, ReloadCommand: p.ReloadCommand, ConfigTest: p.ConfigTest, HasConfigTest: p.HasConfigTest, WorkerPattern: p.WorkerPattern}
}

// toWant is a certificate some container asks for, as acme orders it.
func toWant(c dockerwatch.CertSpec) acme.Want {
	return acme.Want{Name: c.Name, Domains: c.Domains, Containers: c.Containers, KeyType: c.KeyType, Profile: c.Profile,
		Email: c.Email, Group: c.Group, CombinedPEM: c.CombinedPEM, Challenge: c.Challenge, DNS: c.DNS}
}

// toCert is a certificate acme has made current, as signal proves it served.
func toCert(d acme.Deployment) signal.Cert {
	return signal.Cert{Name: d.Name, Group: d.Group, Domains: d.Domains, Serial: d.Serial, Fingerprint: d.Fingerprint, Written: d.Written,
		KeyAlg: d.KeyAlg}
}
