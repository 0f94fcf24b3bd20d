package dockerwatch

import (
	"strings"
	"testing"
)

// FuzzParse: whatever labels a container carries, Parse never panics, every
// certificate it wants has valid names, and every container is either used
// or named in a problem.
func FuzzParse(f *testing.F) {
	for _, seed := range [][3]string{
		{"example.com,www.example.com", "", ""},
		{"a.example.com", "site", "ec384"},
		{"*.example.com", "", ""},
		{"../etc", "../../x", "rsa1024"},
		{"a.example.com b.example.com\tc.example.com", "UPPER", ""},
		{"", "", ""},
		{"1.2.3.4", ".hidden", "ec256"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, domains, name, keyType string) {
		labels := map[string]string{"edgecert.domains": domains}
		if name != "" {
			labels["edgecert.name"] = name
		}
		if keyType != "" {
			labels["edgecert.key_type"] = keyType
		}
		d := Parse(testRules, []Container{{ID: "1", Name: "app", Running: true, Labels: labels}})
		if len(d.Certs)+len(d.Problems) == 0 {
			t.Fatalf("labels %v: neither a certificate nor a problem", labels)
		}
		for _, c := range d.Certs {
			if err := testRules.checkName(c.Name); err != nil {
				t.Fatalf("certificate name %q accepted: %v", c.Name, err)
			}
			for _, dom := range c.Domains {
				if err := ValidateDomain(dom); err != nil || strings.ContainsAny(dom, "/\\ \x00") {
					t.Fatalf("domain %q accepted: %v", dom, err)
				}
			}
		}
	})
}
