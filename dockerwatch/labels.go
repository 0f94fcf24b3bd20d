package dockerwatch

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Label suffixes, appended to the configured prefix and a dot.
const (
	labelDomains   = "domains"        // any container: the domains of one certificate
	labelName      = "name"           // any container: the certificate's name (default: first domain)
	labelNginx     = "nginx"          // proxy container: "true" or a group name
	labelTLSPort   = "tls_port"       // proxy container: port for the proof handshake (default 443)
	labelKeyType   = "key_type"       // certificate option: ec256, ec384, rsa2048, rsa3072, rsa4096
	labelProfile   = "profile"        // certificate option: ACME profile
	labelEmail     = "email"          // certificate option: ACME account contact
	labelGroup     = "proxy"          // certificate option: the proxy group that serves it (default: all proxies)
	labelSignal    = "signal"         // proxy: reload signal (default HUP)
	labelTest      = "config_test"    // proxy: config test command (default "nginx -t"; empty: none)
	labelWorkers   = "workers"        // proxy: ps CMD substring of its worker processes
	labelReload    = "reload_command" // proxy: exec this instead of a signal
	labelCombined  = "combined_pem"   // proxy: write combined.pem (certificate, chain, key) for its certificates
	labelChallenge = "challenge"      // certificate option: http-01 (default), dns-01 or dns-persist-01
	labelDNS       = "dns_provider"   // certificate option: one of the configured DNS providers
)

// Challenge types a certificate may name.
const (
	ChallengeHTTP       = "http-01"
	ChallengeDNS        = "dns-01"
	ChallengeDNSPersist = "dns-persist-01" // a TXT record the operator sets once; no DNS provider
)

// Signals a proxy label may name. Others (TERM, KILL, ...) would stop the proxy.
var Signals = []string{"HUP", "USR1", "USR2"}

// Rules are what labels may say beyond their syntax: facts owned by the
// stages downstream (which key types can be ordered, which names the
// certificate volume takes), handed in by the wiring so that they are
// defined once.
type Rules struct {
	Prefix   string             // label prefix, e.g. "edgecert"
	KeyTypes []string           // the key types a label may name; empty: any
	CertName func(string) error // checks a certificate name; nil: a plain file name
	// DNSProviders are the configured DNS-01 providers, the default first;
	// none: DNS-01 (and so wildcard names) cannot be asked for.
	DNSProviders []string
	// IPProfile is the ACME profile of a certificate with an IP address
	// when its labels name none (Let's Encrypt issues for addresses only
	// under its short-lived profile); "": the configured default.
	IPProfile string
}

// checkName checks an edgecert.name value with r.CertName, or else as a
// plain file name, since it becomes a path on the certificate volume.
func (r Rules) checkName(name string) error {
	if r.CertName != nil {
		return r.CertName(name)
	}
	if name == "" || len(name) > 100 || name[0] == '.' || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("certificate name %q must be a plain file name", name)
	}
	return nil
}

// Container is what the watcher needs to know of one container.
type Container struct {
	ID      string
	Name    string
	Created int64
	Running bool
	Starts  int // start events seen for it since edgecert started
	Labels  map[string]string
	// acme-companion compatibility (filled only when it is enabled).
	CompanionHosts string // LETSENCRYPT_HOST or ACME_HOST from the environment
	CompanionVar   string // which of the two
	CompanionEmail string // LETSENCRYPT_EMAIL or ACME_EMAIL
	// CompanionChallenge is ACME_CHALLENGE (HTTP-01 or DNS-01; acme.sh's
	// provider settings, ACMESH_DNS_API_CONFIG, are not translated: the
	// DNS provider is edgecert's).
	CompanionChallenge string
	// CompanionSingle is ACME_SINGLE_DOMAIN_CERTS (or LETSENCRYPT_...)
	// true: a certificate for each name of CompanionHosts.
	CompanionSingle bool
	// CompanionKeySize is ACME_KEYSIZE (or LETSENCRYPT_KEYSIZE), named by
	// CompanionKeyVar; CompanionProfile is ACME_CERT_PROFILE.
	CompanionKeySize, CompanionKeyVar, CompanionProfile string
	NginxProxy                                          bool // labelled com.github.nginx-proxy.nginx
}

var companionKeySizes = map[string]string{"2048": "rsa2048", "3072": "rsa3072", "4096": "rsa4096", "ec-256": "ec256", "ec-384": "ec384"}

// CompanionKeyType is edgecert's key type for acme-companion's ACME_KEYSIZE.
func CompanionKeyType(size string) (string, error) {
	kt, ok := companionKeySizes[strings.ToLower(strings.TrimSpace(size))]
	if !ok {
		return "", fmt.Errorf("%q: want 2048, 3072, 4096, ec-256 or ec-384 (acme-companion's key sizes)", size)
	}
	return kt, nil
}

// NginxProxyLabel marks nginx-proxy's container (acme-companion's convention).
const NginxProxyLabel = "com.github.nginx-proxy.nginx"

// CertSpec is one certificate that some container wants.
type CertSpec struct {
	Name       string
	Domains    []string // normalised, deduplicated, in label order
	Containers []string // names of the containers that ask for it, sorted
	KeyType    string   // "" for the default
	Profile    string   // "" for the default
	Email      string   // "" for the default
	Group      string   // "" for every proxy
	Challenge  string   // "" (HTTP-01), ChallengeDNS or ChallengeDNSPersist
	DNS        string   // DNS-01: the provider; "" for none
	// CombinedPEM: a proxy that serves it (its group's or an all-groups one)
	// asks for combined.pem.
	CombinedPEM bool
}

// Proxy is a container to reload when certificates change.
type Proxy struct {
	ID      string
	Name    string
	Group   string // "" for the label value "true": every certificate
	TLSPort int
	Running bool
	Starts  int // changes when the proxy (re)starts: its certificates are proven again
	// How to reload it; zero values mean nginx's defaults.
	Signal        string   // "" for HUP
	ReloadCommand []string // exec instead of a signal; nil: the signal
	ConfigTest    []string // used when HasConfigTest; empty disables the test
	HasConfigTest bool
	WorkerPattern string // "" for nginx's
	CombinedPEM   bool   // its certificates need combined.pem (HAProxy's crt)
}

// Problem is a label that could not be used. It names the container, the
// label and what is wrong, so an operator can fix it without reading code.
type Problem struct {
	Container string `json:"container"`
	Label     string `json:"label"`
	Err       string `json:"error"`
}

func (p Problem) String() string {
	return fmt.Sprintf("container %s: label %s: %s", p.Container, p.Label, p.Err)
}

// Desired is the whole wanted state derived from one full container list.
type Desired struct {
	Certs    []CertSpec
	Proxies  []Proxy
	Problems []Problem
}

// Parse derives the desired state from a list of containers. Certificates
// come from running containers only; proxies are listed whatever their state,
// so that callers can tell "no proxy" from "proxy not running". It never fails
// as a whole: a container with a bad label is reported in Problems and the
// others are used as they are.
func Parse(r Rules, containers []Container) Desired {
	p := r.Prefix + "."
	sorted := append([]Container(nil), containers...)
	// Oldest first, so that in a conflict the container that was there first wins
	// and the verdict does not flap between lists.
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Created != sorted[j].Created {
			return sorted[i].Created < sorted[j].Created
		}
		return sorted[i].Name < sorted[j].Name
	})

	var d Desired
	byName := map[string]*CertSpec{}
	explicit := map[string]bool{} // the certificate's name was given by edgecert.name
	var order []string
	// add asks for the certificate of domains on behalf of container c (its
	// domains read from domainsFrom), or reports why it cannot.
	add := func(c Container, domains []string, domainsFrom string) {
		name := defaultName(domains)
		if v, ok := c.Labels[p+labelName]; ok {
			if err := r.checkName(v); err != nil {
				d.Problems = append(d.Problems, Problem{c.Name, p + labelName, err.Error()})
				return
			}
			name = v
		} else if err := r.checkName(name); err != nil {
			// A default name is checked as a label's is: one the volume cannot
			// take must be refused before any order, not after the CA issued.
			d.Problems = append(d.Problems, Problem{c.Name, domainsFrom, fmt.Sprintf(
				"the certificate would be named after its first domain, and %v: give this container %s%s", err, p, labelName)})
			return
		}
		spec := CertSpec{Name: name, Domains: domains, Containers: []string{c.Name}}
		if g, ok := c.Labels[p+labelNginx]; ok && groupRE.MatchString(g) && !isBool(g) {
			spec.Group = g // domains on a proxy of a group belong to that group
		}
		if prob := parseOptions(r, c, &spec); prob != nil {
			d.Problems = append(d.Problems, *prob)
			return
		}
		fromEnv := domainsFrom != p+labelDomains // acme-companion's variables apply
		if fromEnv && spec.KeyType == "" && c.CompanionKeySize != "" {
			kt, err := CompanionKeyType(c.CompanionKeySize)
			if err == nil && len(r.KeyTypes) > 0 && !slices.Contains(r.KeyTypes, kt) {
				err = fmt.Errorf("%q: key type %s is not one edgecert orders", c.CompanionKeySize, kt)
			}
			if err != nil {
				d.Problems = append(d.Problems, Problem{c.Name, "env " + c.CompanionKeyVar, err.Error()})
				return
			}
			spec.KeyType = kt
		}
		if fromEnv && spec.Profile == "" && c.CompanionProfile != "" {
			if !profileRE.MatchString(c.CompanionProfile) {
				d.Problems = append(d.Problems, Problem{c.Name, "env ACME_CERT_PROFILE", fmt.Sprintf("%q is not an ACME profile name (letters, digits, '.', '_', '-')", c.CompanionProfile)})
				return
			}
			spec.Profile = c.CompanionProfile
		}
		if fromEnv && spec.Email == "" && c.CompanionEmail != "" {
			if !emailRE.MatchString(c.CompanionEmail) {
				d.Problems = append(d.Problems, Problem{c.Name, "env LETSENCRYPT_EMAIL", fmt.Sprintf("%q is not an email address", c.CompanionEmail)})
				return
			}
			spec.Email = c.CompanionEmail
		}
		_, named := c.Labels[p+labelName]
		if prev, ok := byName[name]; ok {
			sameNames := slices.Equal(slices.Sorted(slices.Values(prev.Domains)), slices.Sorted(slices.Values(domains))) // both deduplicated
			if !sameNames && named && !explicit[name] && slices.Contains(domains, name) {
				// A container that names its certificate after one of its own
				// domains wins over one whose first domain merely happens to
				// be that name, however old: a recreated owner must not lose
				// its name to it.
				for _, pc := range prev.Containers {
					d.Problems = append(d.Problems, Problem{pc, p + labelDomains, fmt.Sprintf(
						"its first domain makes certificate name %q, which container %s names explicitly for %s: give this container %s%s",
						name, c.Name, strings.Join(domains, ","), p, labelName)})
				}
				explicit[name] = true
				*prev = spec
				return
			}
			if !sameNames {
				d.Problems = append(d.Problems, Problem{c.Name, p + labelDomains, fmt.Sprintf(
					"certificate %q is already requested by container %s for %s; this container asks for %s: give it another %s%s",
					name, prev.Containers[0], strings.Join(prev.Domains, ","), strings.Join(domains, ","), p, labelName)})
				return
			}
			if label, differs := optionsDiffer(prev, &spec); differs {
				d.Problems = append(d.Problems, Problem{c.Name, p + label, fmt.Sprintf(
					"certificate %q is already requested by container %s with other options; containers sharing a certificate must agree on %s%s",
					name, prev.Containers[0], p, label)})
				return
			}
			prev.Containers = append(prev.Containers, c.Name)
			return
		}
		byName[name] = &spec
		explicit[name] = named
		order = append(order, name)
	}
	for _, c := range sorted {
		if _, ok := c.Labels[p+labelNginx]; !ok && c.NginxProxy {
			// nginx-proxy's PID 1 is forego, not nginx: reload through nginx itself.
			d.Proxies = append(d.Proxies, Proxy{ID: c.ID, Name: c.Name, TLSPort: 443, Running: c.Running, Starts: c.Starts,
				ReloadCommand: []string{"nginx", "-s", "reload"}})
		}
		if v, ok := c.Labels[p+labelNginx]; ok {
			proxy, probs := parseProxy(p, c, v)
			d.Problems = append(d.Problems, probs...)
			if proxy != nil {
				d.Proxies = append(d.Proxies, *proxy)
			}
		}

		raw, ok := c.Labels[p+labelDomains]
		domainsFrom := p + labelDomains
		if !ok && c.CompanionHosts != "" {
			raw, ok, domainsFrom = c.CompanionHosts, true, "env "+c.CompanionVar
		}
		if !c.Running {
			continue
		}
		if !ok {
			if _, named := c.Labels[p+labelName]; named {
				d.Problems = append(d.Problems, Problem{c.Name, p + labelName, "set without " + p + labelDomains + "; no certificate is requested"})
			}
			continue
		}
		domains, err := ParseDomains(raw)
		if err != nil {
			d.Problems = append(d.Problems, Problem{c.Name, domainsFrom, err.Error()})
			continue
		}
		sets := [][]string{domains}
		if c.CompanionSingle && domainsFrom != p+labelDomains {
			// acme-companion's ACME_SINGLE_DOMAIN_CERTS: a certificate per
			// name, each called after it.
			sets = nil
			for _, dn := range domains {
				sets = append(sets, []string{dn})
			}
		}
		for _, domains := range sets {
			add(c, domains, domainsFrom)
		}
	}
	sort.Strings(order)
	for _, n := range order {
		s := byName[n]
		sort.Strings(s.Containers)
		for _, px := range d.Proxies {
			if px.CombinedPEM && (px.Group == "" || px.Group == s.Group) {
				s.CombinedPEM = true
			}
		}
		d.Certs = append(d.Certs, *s)
	}
	sort.Slice(d.Proxies, func(i, j int) bool { return d.Proxies[i].Name < d.Proxies[j].Name })
	return d
}

// parseOptions reads a certificate's optional labels into spec.
func parseOptions(r Rules, c Container, spec *CertSpec) *Problem {
	p := r.Prefix + "."
	if v, ok := c.Labels[p+labelKeyType]; ok {
		v = strings.ToLower(strings.TrimSpace(v))
		if len(r.KeyTypes) > 0 && !slices.Contains(r.KeyTypes, v) {
			return &Problem{c.Name, p + labelKeyType, fmt.Sprintf("%q: want one of %s", v, strings.Join(r.KeyTypes, ", "))}
		}
		spec.KeyType = v
	}
	if v, ok := c.Labels[p+labelProfile]; ok {
		v = strings.TrimSpace(v)
		if !profileRE.MatchString(v) {
			return &Problem{c.Name, p + labelProfile, fmt.Sprintf("%q is not an ACME profile name (letters, digits, '.', '_', '-')", v)}
		}
		spec.Profile = v
	}
	if spec.Profile == "" && slices.ContainsFunc(spec.Domains, IsIP) {
		spec.Profile = r.IPProfile
	}
	if v, ok := c.Labels[p+labelGroup]; ok {
		v = strings.TrimSpace(v)
		if !groupRE.MatchString(v) || isBool(v) {
			return &Problem{c.Name, p + labelGroup, fmt.Sprintf("%q is not a group name (letters, digits, '.', '_', '-'; the group of an %s%s proxy)", v, p, labelNginx)}
		}
		spec.Group = v
	}
	if v, ok := c.Labels[p+labelEmail]; ok {
		v = strings.TrimSpace(v)
		if !emailRE.MatchString(v) {
			return &Problem{c.Name, p + labelEmail, fmt.Sprintf("%q is not an email address", v)}
		}
		spec.Email = v
	}
	return parseChallenge(r, c, spec)
}

// parseChallenge picks the certificate's challenge: the label's, or DNS-01
// when a name is a wildcard, or HTTP-01.
func parseChallenge(r Rules, c Container, spec *CertSpec) *Problem {
	p := r.Prefix + "."
	wildcard := slices.ContainsFunc(spec.Domains, func(d string) bool { return strings.HasPrefix(d, "*.") })
	spec.Challenge = ""
	if wildcard {
		spec.Challenge = ChallengeDNS
	}
	if v := strings.ToLower(c.CompanionChallenge); v != "" && c.Labels[p+labelDomains] == "" {
		// acme-companion's ACME_CHALLENGE, for a container it describes.
		if _, ok := c.Labels[p+labelChallenge]; !ok {
			c.Labels = maps.Clone(c.Labels)
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[p+labelChallenge] = v
		}
	}
	if v, ok := c.Labels[p+labelChallenge]; ok {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case ChallengeHTTP:
			if wildcard {
				return &Problem{c.Name, p + labelChallenge, "http-01 cannot prove a wildcard name: use dns-01 or dns-persist-01 (or leave the label out)"}
			}
			v = ""
		case ChallengeDNS, ChallengeDNSPersist:
		default:
			return &Problem{c.Name, p + labelChallenge, fmt.Sprintf("%q: want http-01, dns-01 or dns-persist-01", v)}
		}
		spec.Challenge = v
	}
	if ip := slices.IndexFunc(spec.Domains, IsIP); ip >= 0 && spec.Challenge != "" {
		return &Problem{c.Name, p + labelChallenge, fmt.Sprintf("%s: a CA validates an IP address over http-01 only (or tls-alpn-01), never %s", spec.Domains[ip], spec.Challenge)}
	}
	if _, ok := c.Labels[p+labelDNS]; ok && spec.Challenge == ChallengeDNSPersist {
		return &Problem{c.Name, p + labelDNS, "dns-persist-01 uses no DNS provider (the record is set once, by hand): leave " + p + labelDNS + " out"}
	}
	if v, ok := c.Labels[p+labelDNS]; ok {
		v = strings.TrimSpace(v)
		if !slices.Contains(r.DNSProviders, v) {
			return &Problem{c.Name, p + labelDNS, fmt.Sprintf("%q is not a configured DNS provider (EDGECERT_DNS_PROVIDER: %s)", v, orNone(r.DNSProviders))}
		}
		spec.DNS = v
		spec.Challenge = ChallengeDNS
	}
	if spec.Challenge == ChallengeDNS && len(r.DNSProviders) == 0 {
		what, label := "dns-01", p+labelChallenge
		if wildcard {
			what, label = "a wildcard name needs dns-01, which", p+labelDomains
		}
		return &Problem{c.Name, label, what + " needs a DNS provider: set EDGECERT_DNS_PROVIDER (a lego provider name) and its credentials on edgecert"}
	}
	if spec.Challenge == ChallengeDNS && spec.DNS == "" {
		spec.DNS = r.DNSProviders[0]
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none set"
	}
	return strings.Join(s, ", ")
}

// defaultName is a certificate's name when no label gives one: its first
// name that is not a wildcard (example.com for "*.example.com,example.com"),
// or the wildcard's base with "wildcard." before it. An IPv6 address has
// '-' for its colons (2001-db8--1), as a file name on every volume takes.
func defaultName(domains []string) string {
	for _, d := range domains {
		if !strings.HasPrefix(d, "*.") {
			return strings.ReplaceAll(d, ":", "-")
		}
	}
	return "wildcard." + strings.TrimPrefix(domains[0], "*.")
}

func optionsDiffer(a, b *CertSpec) (string, bool) {
	switch {
	case a.KeyType != b.KeyType:
		return labelKeyType, true
	case a.Profile != b.Profile:
		return labelProfile, true
	case a.Email != b.Email:
		return labelEmail, true
	case a.Group != b.Group:
		return labelGroup, true
	case a.Challenge != b.Challenge:
		return labelChallenge, true
	case a.DNS != b.DNS:
		return labelDNS, true
	}
	return "", false
}

var (
	profileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	emailRE   = regexp.MustCompile(`^[^@\s,<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$`)
	groupRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)
