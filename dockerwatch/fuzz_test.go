package dockerwatch

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// storeRules are testRules with a name check like the certificate store's
// (acme.ValidateName, which dockerwatch does not import): 1-100 lowercase
// letters, digits, '.', '_' or '-'.
var storeRules = func() Rules {
	r := testRules
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}$`)
	r.CertName = func(n string) error {
		if !re.MatchString(n) || strings.Contains(n, "..") {
			return fmt.Errorf("certificate name %q must be 1-100 lowercase letters, digits, '.', '_' or '-'", n)
		}
		return nil
	}
	return r
}()

// domainOfLength is a valid domain name of exactly n characters (n >= 4),
// in labels of at most 63.
func domainOfLength(n int) string {
	if n == 4 {
		return "a.co"
	}
	var b strings.Builder
	for rem := n - 4; rem > 0; {
		l := min(63, rem)
		if rem-l == 1 {
			l-- // leave room for a dot and a label of one
		}
		b.WriteString(strings.Repeat("a", l))
		if rem -= l; rem > 0 {
			b.WriteByte('.')
			rem--
		}
	}
	return b.String() + ".com"
}

// FuzzParse: whatever labels a container carries, and however long the
// domain its certificate would be named after, Parse never panics, every
// certificate it wants has a name the store takes and valid domains, and
// every container is either used or named in a problem.
func FuzzParse(f *testing.F) {
	for _, seed := range []struct {
		domains, name, keyType string
		long                   uint8
	}{
		{"example.com,www.example.com", "", "", 0},
		{"a.example.com", "site", "ec384", 0},
		{"*.example.com", "", "", 0},
		{"../etc", "../../x", "rsa1024", 0},
		{"a.example.com b.example.com\tc.example.com", "UPPER", "", 0},
		{"", "", "", 0},
		{"1.2.3.4", ".hidden", "ec256", 0},
		{"", "", "", 97},      // a first domain of 100 characters: the longest default name
		{"", "", "", 98},      // 101: one too many
		{"", "site", "", 250}, // 253, named by label
		{"*.x", "", "", 120},
	} {
		f.Add(seed.domains, seed.name, seed.keyType, seed.long)
	}
	f.Fuzz(func(t *testing.T, domains, name, keyType string, long uint8) {
		if long > 0 {
			// A first domain of 4 to 253 characters, before what the fuzzer wrote.
			domains = domainOfLength(4+int(long)-1) + "," + domains
		}
		labels := map[string]string{"edgecert.domains": domains}
		if name != "" {
			labels["edgecert.name"] = name
		}
		if keyType != "" {
			labels["edgecert.key_type"] = keyType
		}
		for _, rules := range []Rules{testRules, storeRules} {
			d := Parse(rules, []Container{{ID: "1", Name: "app", Running: true, Labels: labels}})
			if len(d.Certs)+len(d.Problems) == 0 {
				t.Fatalf("labels %v: neither a certificate nor a problem", labels)
			}
			for _, c := range d.Certs {
				if err := rules.checkName(c.Name); err != nil {
					t.Fatalf("certificate name %q accepted: %v", c.Name, err)
				}
				for _, dom := range c.Domains {
					if err := ValidateDomain(dom); err != nil || strings.ContainsAny(dom, "/\\ \x00") {
						t.Fatalf("domain %q accepted: %v", dom, err)
					}
				}
			}
		}
	})
}
