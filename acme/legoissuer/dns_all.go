//go:build dnsall

package legoissuer

import (
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns"
)

// Every DNS provider of lego, by the names its factory knows (the list in
// dns_names.go, generated from that factory). rfc2136, exec and httpreq
// keep their entries in dns.go.
func init() {
	dnsBuild = "all"
	for _, n := range legoDNSProviders {
		if _, ok := dnsProviders[n]; !ok {
			dnsProviders[n] = func() (challenge.Provider, error) { return dns.NewDNSChallengeProviderByName(n) }
		}
	}
}
