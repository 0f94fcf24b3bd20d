package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// The CLI side of the control socket: status, renew and health, run through
// docker exec in the daemon's container.

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	warnDays := fs.Int("warn-days", 14, "exit 1 if a certificate in use expires within this many days")
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 {
		fmt.Fprintln(stderr, "usage: edgecert status [--json] [--warn-days N] [NAME]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	doc, err := fetchStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	now := time.Now()
	if fs.NArg() == 1 {
		c, ok := findCert(doc, fs.Arg(0))
		if !ok {
			fmt.Fprintf(stderr, "edgecert: no certificate named or covering %q\n", fs.Arg(0))
			return 2
		}
		doc.Certificates = []CertView{c}
	}
	switch {
	case *asJSON && fs.NArg() == 1:
		writeIndented(stdout, doc.Certificates[0])
	case *asJSON:
		writeIndented(stdout, doc)
	case fs.NArg() == 1:
		printDetail(stdout, doc.Certificates[0], now)
	default:
		printStatus(stdout, doc, now)
	}
	if doc.Docker.Error != "" {
		fmt.Fprintf(stderr, "edgecert: %s: changes to containers are not seen\n", doc.Docker.Error)
		return 2
	}
	if bad := unhealthy(doc, now, time.Duration(*warnDays)*24*time.Hour); len(bad) > 0 {
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

// unhealthy lists the certificates in use that are failing or expire within warn.
func unhealthy(doc StatusDoc, now time.Time, warn time.Duration) []string {
	var bad []string
	for _, c := range doc.Certificates {
		switch {
		case c.State == acme.StateUnused:
		case c.State == acme.StateFailing:
			bad = append(bad, c.Name+" is failing")
		case c.State != acme.StatePlaceholder && c.State != acme.StatePending && !c.NotAfter.IsZero() && c.NotAfter.Sub(now) < warn:
			bad = append(bad, fmt.Sprintf("%s expires in %s", c.Name, c.NotAfter.Sub(now).Round(time.Minute)))
		}
	}
	return bad
}

func cmdRenew(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("renew", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "renew even if the certificate is not due, and bypass any retry wait")
	dryRun := fs.Bool("dry-run", false, "order from the dry-run CA (EDGECERT_DRY_RUN_DIRECTORY) and discard the result: nothing is written or reloaded")
	all := fs.Bool("all", false, "every certificate in use")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the outcome")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if (fs.NArg() == 0) == !*all {
		fmt.Fprintln(stderr, "usage: edgecert renew [--force] [--dry-run] [--timeout 10m] (--all | NAME|DOMAIN...)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	doc, err := fetchStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 2
	}
	var names []string
	for _, c := range doc.Certificates {
		if *all && c.State != acme.StateUnused {
			names = append(names, c.Name)
		}
	}
	for _, a := range fs.Args() {
		c, ok := findCert(doc, a)
		if !ok {
			fmt.Fprintf(stderr, "edgecert: no certificate named or covering %q (see edgecert status)\n", a)
			return 2
		}
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(stdout, "no certificate in use")
		return 0
	}
	what := "renewing %s\n"
	if *dryRun {
		what = "dry run for %s (ordering and validating against the dry-run CA; nothing is written)\n"
	}
	fmt.Fprintf(stdout, what, strings.Join(names, ", "))

	type answer struct {
		res renewResponse
		err error
	}
	done := make(chan answer, 1)
	go func() {
		var res renewResponse
		_, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/renew", renewRequest{Names: names, Force: *force, DryRun: *dryRun}, &res)
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
			if *dryRun {
				continue
			}
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
			fmt.Fprintf(w, " (serial %s, expires %s)", r.Serial, r.NotAfter.UTC().Format(time.RFC3339))
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

func cmdForget(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: edgecert forget NAME")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var res acme.RenewResult
	if _, err := newControlClient(socketPath()).do(ctx, "POST", "/v1/forget", map[string]string{"name": args[0]}, &res); err != nil {
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
