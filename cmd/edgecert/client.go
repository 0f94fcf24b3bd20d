package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// The CLI side of the control socket: status, renew and health, run through
// docker exec in the daemon's container.

type statusOpts struct {
	json      bool
	warnDays  int
	warnSet   bool // --warn-days given: taken as it is, whatever the lifetime
	width     int
	certNames []string
}

func cmdStatus(o statusOpts, names []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	doc, err := fetchStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	now := time.Now()
	if len(names) == 1 {
		c, ok := findCert(doc, names[0])
		if !ok {
			fmt.Fprintf(stderr, "edgecert: no certificate named or covering %q\n", names[0])
			return 2
		}
		doc.Certificates = []CertView{c}
	}
	switch {
	case o.json && len(names) == 1:
		writeIndented(stdout, doc.Certificates[0])
	case o.json:
		writeIndented(stdout, doc)
	case len(names) == 1:
		printDetail(stdout, doc.Certificates[0], now)
	default:
		printStatus(stdout, doc, now, tableWidth(o.width, stdout))
	}
	if doc.Docker.Error != "" {
		fmt.Fprintf(stderr, "edgecert: %s: changes to containers are not seen\n", doc.Docker.Error)
		return 2
	}
	if bad := unhealthy(doc, now, time.Duration(o.warnDays)*24*time.Hour, !o.warnSet); len(bad) > 0 {
		fmt.Fprintf(stderr, "edgecert: needs attention: %s\n", strings.Join(bad, "; "))
		return 1
	}
	return 0
}

func fetchStatus(ctx context.Context) (StatusDoc, error) {
	var doc StatusDoc
	_, err := newControlClient(socketPath()).do(ctx, "GET", "/v1/status", nil, &doc)
	return doc, err
}

func writeIndented(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// findCert finds a certificate by name, or else by one of its domains.
func findCert(doc StatusDoc, key string) (CertView, bool) {
	for _, c := range doc.Certificates {
		if c.Name == key {
			return c, true
		}
	}
	for _, c := range doc.Certificates {
		if slices.Contains(c.Domains, strings.ToLower(key)) && c.State != acme.StateUnused {
			return c, true
		}
	}
	return CertView{}, false
}

// unhealthy lists the certificates in use that are failing or expire within
// warn; with byLifetime (the default warning, not one the operator set),
// within a third of their lifetime when that is shorter: a short-lived
// certificate (6 days, an IP address's) always expires within 14 days, and
// is renewed with half of its lifetime left.
func unhealthy(doc StatusDoc, now time.Time, warn time.Duration, byLifetime bool) []string {
	var bad []string
	for _, c := range doc.Certificates {
		w := warn
		if byLifetime && !c.NotBefore.IsZero() && c.NotAfter.After(c.NotBefore) {
			w = min(w, c.NotAfter.Sub(c.NotBefore)/3)
		}
		switch {
		case c.State == acme.StateUnused:
		case c.State == acme.StateFailing:
			bad = append(bad, c.Name+" is failing")
		case c.State != acme.StatePlaceholder && c.State != acme.StatePending && !c.NotAfter.IsZero() && c.NotAfter.Sub(now) < w:
			bad = append(bad, fmt.Sprintf("%s expires in %s", c.Name, span(c.NotAfter.Sub(now))))
		}
	}
	return bad
}

type renewOpts struct {
	force, dryRun, all bool
	names, certNames   []string
	timeout            time.Duration
}

func cmdRenew(o renewOpts, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	doc, err := fetchStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	now := time.Now()
	var names []string
	for _, a := range o.names {
		c, ok := findCert(doc, a)
		if !ok {
			fmt.Fprintf(stderr, "edgecert: no certificate named or covering %q (see edgecert status)\n", a)
			return 2
		}
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	if len(o.names) == 0 {
		// --all, or --force alone (certbot's renew --force-renewal): every
		// certificate in use; otherwise what is due.
		every := o.all || o.force
		for _, c := range doc.Certificates {
			if c.State != acme.StateUnused && (every || isDue(c, now)) {
				names = append(names, c.Name)
			}
		}
		if len(names) == 0 {
			fmt.Fprintln(stdout, nothingDue(doc, now))
			return 0
		}
		if !every {
			fmt.Fprintf(stdout, "due: %s\n", plural(len(names), "certificate"))
		}
	}
	force, dryRun := o.force, o.dryRun
	what := "renewing %s\n"
	if dryRun {
		what = "dry run for %s (ordering and validating against the dry-run CA; nothing is written)\n"
	}
	fmt.Fprintf(stdout, what, joinNames(names))
	if dryRun {
		return dryRunEach(ctx, names, force, stdout, stderr)
	}

	type answer struct {
		res renewResponse
		err error
	}
	done := make(chan answer, 1)
	go func() {
		var res renewResponse
		_, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/renew", renewRequest{Names: names, Force: force}, &res)
		done <- answer{res, err}
	}()
	// Progress: the daemon's status, read while the renewal runs.
	seen := map[string]string{}
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case a := <-done:
			if a.err != nil {
				fmt.Fprintf(stderr, "edgecert: %v\n", a.err)
				return 2
			}
			return printRenewResults(stdout, a.res)
		case <-tick.C:
			if doc, err := fetchStatus(ctx); err == nil {
				for _, c := range doc.Certificates {
					if slices.Contains(names, c.Name) {
						if p := progressOf(c); p != "" && p != seen[c.Name] {
							seen[c.Name] = p
							fmt.Fprintf(stdout, "  %s: %s\n", c.Name, p)
						}
					}
				}
			}
		}
	}
}

// progressOf describes where a certificate's renewal is.
func progressOf(c CertView) string {
	switch c.Phase {
	case acme.PhasePreflight:
		return "checking that the proxy serves the challenge directory"
	case acme.PhaseOrdering:
		return "ordering and validating with the CA"
	case acme.PhaseWriting:
		return "writing the new pair"
	}
	if c.State == acme.StateValid && !c.Deployed {
		return "written (serial " + c.Serial + "); reloading and proving"
	}
	return ""
}

func printRenewResults(w io.Writer, res renewResponse) int {
	code := 0
	for _, r := range res.Results {
		if r.Err != "" {
			code = 1
			fmt.Fprintf(w, "%s: FAILED: %s: %s\n", r.Name, orDash(r.Message), r.Err)
			continue
		}
		fmt.Fprintf(w, "%s: %s", r.Name, r.Message)
		if r.Serial != "" {
			fmt.Fprintf(w, " (serial %s, expires %s)", r.Serial, clock(r.NotAfter))
		}
		fmt.Fprintln(w)
	}
	return code
}

func cmdHealth(stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out map[string]string
	code, err := newControlClient(socketPath()).do(ctx, "GET", "/v1/health", nil, &out)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 1
	}
	if code != 200 {
		fmt.Fprintf(stderr, "edgecert: unhealthy: %s\n", out["error"])
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func cmdForget(name string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var res acme.RenewResult
	if _, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/forget", map[string]string{"name": name}, &res); err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	if res.Err != "" {
		fmt.Fprintf(stderr, "edgecert: %s\n", res.Err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", res.Name, res.Message)
	return 0
}

func cmdDNSRecord(key string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res struct {
		dnsRecordAnswer
		Error string `json:"error"`
	}
	code, err := newControlClient(socketPath()).do(ctx, "GET", "/v1/dns-record?name="+url.QueryEscape(key), nil, &res)
	if err == nil && code != http.StatusOK {
		err = errors.New(cmp.Or(res.Error, fmt.Sprintf("the daemon answered %d", code)))
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	missing := 0
	for _, r := range res.Records {
		if r.Problem != "" {
			missing++
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res.dnsRecordAnswer)
	} else {
		what := strings.Join(res.Domains, ",")
		if res.Name != "" {
			what = res.Name + " (" + what + ")"
		}
		fmt.Fprintf(stdout, "; DNS-PERSIST-01 for %s: set once at your DNS host\n", what)
		for _, r := range res.Records {
			fmt.Fprintln(stdout, r.String())
			if r.Problem != "" {
				fmt.Fprintf(stdout, ";   not in place: %s\n", r.Problem)
			} else {
				fmt.Fprintln(stdout, ";   in place")
			}
		}
	}
	if missing > 0 {
		return 1
	}
	return 0
}

func socketPath() string {
	return cmp.Or(os.Getenv("EDGECERT_SOCKET"), defaultSocket)
}

// controlClient talks to the daemon's socket.
type controlClient struct {
	http *http.Client
}

func newControlClient(path string) *controlClient {
	return &controlClient{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

var errDaemon = errors.New("cannot reach the edgecert daemon")

func (c *controlClient) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://edgecert"+path, rd)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w (is `edgecert run` up in this container?): %w", errDaemon, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("decode daemon answer: %w", err)
	}
	return resp.StatusCode, nil
}

// isDue says whether renew without names takes c: past its renewal time,
// failing, not yet issued, or written but not proven served.
func isDue(c CertView, now time.Time) bool {
	switch {
	case c.State == acme.StateUnused:
		return false
	case c.Held != nil:
		return false // a rollback holds it: only `renew NAME` releases it
	case c.State == acme.StateFailing || c.State == acme.StatePending || c.State == acme.StatePlaceholder:
		return true
	}
	return !c.Deployed || (!c.RenewAt.IsZero() && !now.Before(c.RenewAt))
}

// nothingDue says that nothing is due, and what comes next.
func nothingDue(doc StatusDoc, now time.Time) string {
	var next *CertView
	for i, c := range doc.Certificates {
		if c.State == acme.StateUnused || c.Held != nil || c.RenewAt.IsZero() {
			continue
		}
		if next == nil || c.RenewAt.Before(next.RenewAt) {
			next = &doc.Certificates[i]
		}
	}
	if next == nil {
		return "nothing is due: no certificate in use"
	}
	return fmt.Sprintf("nothing is due; the next renewal is %s at %s (in %s); use --force to renew now",
		next.Name, clock(next.RenewAt), span(next.RenewAt.Sub(now)))
}

// dryRunEach runs a dry run per certificate, all at once, and prints each
// outcome as it comes, with a line now and then for those still running.
func dryRunEach(ctx context.Context, names []string, force bool, stdout, stderr io.Writer) int {
	type answer struct {
		res renewResponse
		err error
	}
	done := make(chan answer, len(names))
	for _, n := range names {
		fmt.Fprintf(stdout, "  %s: ordering and validating against the dry-run CA\n", n)
		go func() {
			var res renewResponse
			_, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/renew", renewRequest{Names: []string{n}, Force: force, DryRun: true}, &res)
			if err == nil && len(res.Results) == 0 {
				err = fmt.Errorf("%s: the daemon answered nothing", n)
			}
			done <- answer{res, err}
		}()
	}
	started := time.Now()
	left := slices.Clone(names)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	code := 0
	for len(left) > 0 {
		select {
		case a := <-done:
			if a.err != nil {
				fmt.Fprintf(stderr, "edgecert: %v\n", a.err)
				return 2
			}
			left = slices.DeleteFunc(left, func(n string) bool { return n == a.res.Results[0].Name })
			code = max(code, printRenewResults(stdout, a.res))
		case <-tick.C:
			fmt.Fprintf(stdout, "  still running after %s: %s\n", span(time.Since(started)), joinNames(left))
		}
	}
	return code
}

type rollbackOpts struct {
	name, to string
	timeout  time.Duration
}

func cmdRollback(o rollbackOpts, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	doc, err := fetchStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	c, ok := findCert(doc, o.name)
	if !ok {
		fmt.Fprintf(stderr, "edgecert: no certificate named or covering %q (see edgecert status)\n", o.name)
		return 2
	}
	fmt.Fprintf(stdout, "rolling %s back from serial %s\n", c.Name, orDash(c.Serial))
	var res acme.RenewResult
	if _, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/rollback", rollbackRequest{Name: c.Name, Serial: o.to}, &res); err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	return printRenewResults(stdout, renewResponse{Results: []acme.RenewResult{res}})
}
