package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// The command line as users type it: flags after names, certbot's words,
// help that exits 0, and the exit codes monitoring relies on.
func TestCLIParsing(t *testing.T) {
	d := &fakeDaemon{doc: sampleDoc()}
	serve(t, d)

	tests := []struct {
		args []string
		code int
		out  string // in stdout
		errs string // in stderr
	}{
		{args: []string{"status", "site", "--json"}, out: `"name": "site"`},
		{args: []string{"--json", "status", "site"}, code: 2, errs: "unknown flag: --json"},
		{args: []string{"certificates", "--cert-name", "site"}, out: "history"},
		{args: []string{"status", "site", "--cert-name", "old"}, code: 2, errs: "name at most one"},
		{args: []string{"status", "--help"}, out: "Examples:"},
		{args: []string{"renew", "--help"}, out: "--force-renewal"},
		{args: []string{"help", "rollback"}, out: "--to"},
		{args: []string{"--help"}, out: "Available Commands:"},
		{args: []string{"--version"}, out: version},
		{args: []string{"completion", "bash"}, out: "__start_edgecert"},
		{args: []string{"renew", "site", "--force-renewal"}, out: "renewing site"},
		{args: []string{"renew", "--cert-name", "site", "--dry-run"}, out: "site: ordering and validating against the dry-run CA"},
		{args: []string{"renew", "--all", "site"}, code: 2, errs: "exclude each other"},
		{args: []string{"renew", "--frobnicate"}, code: 2, errs: "Run 'edgecert renew --help' for usage."},
		{args: []string{"rollback"}, code: 2, errs: "accepts 1 arg"},
		{args: []string{"rollback", "www.example.com", "--to", "0abb"}, out: "rolled back to serial 0abb"},
		{args: []string{"rollback", "site", "--to", "dead"}, code: 1, out: "site: FAILED: -: refused: serial dead expired"},
		{args: []string{"forget"}, code: 2, errs: "accepts 1 arg"},
		{args: []string{"dns-record", "persist"}, code: 1,
			out: "_validation-persist.p.example.com. IN TXT \"ca.example; accounturi=https://ca.example/acct/1; policy=wildcard\"\n;   not in place: no TXT record"},
		{args: []string{"dns-record", "persist", "--json"}, code: 1, out: `"owner": "_validation-persist.p.example.com"`},
		{args: []string{"dns-record", "nothing"}, code: 2, errs: `no certificate named or covering "nothing"`},
	}
	for _, tc := range tests {
		out, errs, code := cli(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) {
			t.Errorf("edgecert %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, tc.code, out, errs)
		}
	}
	if !slices.Contains(d.rolledBack, "site@0abb") {
		t.Errorf("rollback by domain did not reach the daemon as site@0abb: %v", d.rolledBack)
	}
}

// renew without names takes what is due: failing, not issued, past its
// renewal time, or not proven served; never what is unused or held.
func TestRenewWithoutNamesTakesWhatIsDue(t *testing.T) {
	now := time.Now()
	doc := sampleDoc() // old (unused), site (valid, renews in 59 days)
	add := func(name string, state acme.State, renewAt time.Time, deployed bool, held bool) {
		c := CertView{CertStatus: acme.CertStatus{Name: name, Domains: []string{name + ".example.com"}, State: state,
			NotAfter: now.Add(30 * 24 * time.Hour), RenewAt: renewAt, Deployed: deployed}}
		if held {
			c.Held = &acme.Hold{Serial: "01", At: now}
		}
		doc.Certificates = append(doc.Certificates, c)
	}
	add("failing", acme.StateFailing, now.Add(time.Hour), false, false)
	add("overdue", acme.StateValid, now.Add(-time.Minute), true, false)
	add("unproven", acme.StateValid, now.Add(40*24*time.Hour), false, false)
	add("held", acme.StateValid, time.Time{}, true, true)
	add("held-failing", acme.StateFailing, time.Time{}, false, true) // its reload failed after a rollback: still held
	d := &fakeDaemon{doc: doc}
	serve(t, d)
	out, errs, code := cli("renew")
	if code != 0 || !strings.Contains(out, "due: 3 certificates") {
		t.Fatalf("renew: exit %d\n%s%s", code, out, errs)
	}
	slices.Sort(d.renewed)
	if want := []string{"failing", "overdue", "unproven"}; !slices.Equal(d.renewed, want) {
		t.Errorf("renew without names renewed %v, want %v", d.renewed, want)
	}
	d.renewed = nil
	if _, _, code := cli("renew", "--force-renewal"); code != 0 || len(d.renewed) != 6 {
		t.Errorf("renew --force-renewal alone: exit %d, renewed %v; want every certificate in use (6)", code, d.renewed)
	}
}
