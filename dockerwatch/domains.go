package dockerwatch

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// Domain names as labels give them: split, lowercased, internationalised
// names in their ASCII form, and each checked as a name HTTP-01 can prove.
// IP addresses are identifiers too (RFC 8738): written in their canonical
// form (RFC 5952 for IPv6), as the CA and the certificate's SAN show them.

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ParseDomains splits a comma (or space) separated list of domain names,
// lowercases them, converts internationalised ones to their ASCII form
// (bücher.example -> xn--bcher-kva.example, as the CA and DNS know them),
// drops duplicates and validates each one as a DNS name that HTTP-01 can
// prove.
func ParseDomains(raw string) ([]string, error) {
	fields := strings.FieldsFunc(raw, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("no domain names in %q", raw)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range fields {
		if ip, ok, err := parseIP(f); ok {
			if err != nil {
				return nil, err
			}
			if !seen[ip] {
				seen[ip] = true
				out = append(out, ip)
			}
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(f, "."))
		if !isASCII(d) {
			base, star := strings.CutPrefix(d, "*.")
			a, err := idna.Lookup.ToASCII(base)
			if err != nil {
				return nil, fmt.Errorf("%q: not a valid internationalised domain name: %v", f, err)
			}
			if d = a; star {
				d = "*." + a
			}
		}
		if err := ValidateDomain(d); err != nil {
			return nil, err
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	if len(out) > 100 {
		return nil, fmt.Errorf("%d domain names: a certificate holds at most 100", len(out))
	}
	return out, nil
}

// parseIP reads f as an IP address when it is one (ok), in its canonical
// form: IPv4 dotted, IPv6 compressed and lowercase, brackets allowed around
// it. A zone (fe80::1%eth0) or an IPv4-mapped IPv6 address is refused: no
// CA validates either.
func parseIP(f string) (ip string, ok bool, err error) {
	s := f
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, perr := netip.ParseAddr(s)
	if perr != nil {
		if strings.Contains(s, "%") && strings.Contains(s, ":") {
			return "", true, fmt.Errorf("%q: an IPv6 address with a zone cannot be in a certificate", f)
		}
		return "", false, nil
	}
	switch {
	case a.Zone() != "":
		return "", true, fmt.Errorf("%q: an IPv6 address with a zone cannot be in a certificate", f)
	case a.Is4In6():
		return "", true, fmt.Errorf("%q: an IPv4-mapped IPv6 address; write the IPv4 address (%s)", f, a.Unmap())
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast():
		return "", true, fmt.Errorf("%q: not an address a CA can reach (unspecified, loopback, multicast or link-local)", f)
	}
	return a.String(), true, nil
}

// IsIP says whether d, one of ParseDomains' results, is an IP address.
func IsIP(d string) bool {
	_, err := netip.ParseAddr(d)
	return err == nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ValidateDomain checks one lowercase domain name.
func ValidateDomain(d string) error {
	switch {
	case strings.HasPrefix(d, "*."):
		return validateName(d[2:], d) // the name under it; the challenge is checked with the labels
	case strings.Contains(d, "*"):
		return fmt.Errorf("%q: a wildcard is only allowed as the whole first label (*.example.com)", d)
	}
	return validateName(d, d)
}

// validateName checks d, a name or the part of a wildcard under its "*."
// (full is the whole name, for the error).
func validateName(d, full string) error {
	switch {
	case IsIP(d):
		return fmt.Errorf("%q: an IP address cannot be under a wildcard", full)
	case len(d) > 253:
		return fmt.Errorf("%q: longer than 253 characters", full)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%q: not a fully qualified domain name (needs at least one dot)", full)
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return fmt.Errorf("%q: label %q must be 1-63 letters, digits or '-', not starting or ending with '-'", full, l)
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return fmt.Errorf("%q: the top-level label is numeric", full)
	}
	return nil
}
