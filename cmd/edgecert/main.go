// Command edgecert keeps TLS certificates fresh for nginx containers on a
// Docker host: it watches container labels, obtains certificates over ACME
// HTTP-01, writes them atomically to a shared volume, and reloads nginx with
// proof. Subcommands: run (default), status, renew, health, version.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: edgecert <command> [flags]

commands:
  run                      run the daemon (the image's default)
  status [--json] [--warn-days N] [NAME]
                           show every certificate (or one, in detail); exit 1 if any is
                           failing or expires within N days (default 14)
  renew [--force] [--dry-run] (--all | NAME|DOMAIN...)
                           renew certificates, print progress, wait for the outcome
  health                   exit 0 if the daemon is up and connected to Docker
  version                  print the version
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(stderr)
	case "status":
		return cmdStatus(args, stdout, stderr)
	case "renew":
		return cmdRenew(args, stdout, stderr)
	case "health":
		return cmdHealth(stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "edgecert: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

func cmdRun(stderr io.Writer) int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: configuration: %v\n", err)
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(h)
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("edgecert stopped", "err", err)
		return 1
	}
	log.Info("edgecert stopped")
	return 0
}

// daemon holds the running pipeline, for the control socket.
type daemon struct {
	cfg      Config
	watcher  *dockerwatch.Watcher
	manager  *acme.Manager
	deployer *signal.Deployer

	mu       sync.Mutex
	problems []dockerwatch.Problem
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	acme.RouteLegoLog(log)
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	store, err := acme.NewStore(cfg.CertsDir)
	if err != nil {
		return err
	}
	if cfg.keyUID >= 0 {
		store.SetKeyOwner(cfg.keyUID, cfg.keyGID)
		n, err := store.FixKeyOwners()
		if err != nil {
			return fmt.Errorf("EDGECERT_KEY_OWNER: %w", err)
		}
		if n > 0 {
			log.Info("private keys given to EDGECERT_KEY_OWNER", "owner", cfg.KeyOwner, "keys", n)
		}
	}
	icfg := acme.IssuerConfig{Directory: cfg.ACMEDirectory, Email: cfg.ACMEEmail, Profile: cfg.ACMEProfile, KeyType: cfg.KeyType,
		RootsFile: cfg.ACMERoots, Webroot: cfg.Webroot, StateDir: cfg.StateDir, EABKid: cfg.EABKid, EABHMAC: cfg.EABHMAC}
	iss, err := acme.NewLegoIssuer(icfg, log)
	if err != nil {
		return err
	}
	icfg.Directory = cfg.DryRunDir
	dry, err := acme.NewLegoIssuer(icfg, log)
	if err != nil {
		return err
	}
	ropts := signal.NginxDefaults()
	ropts.Timeout = cfg.ReloadTimeout
	ropts.Self = signal.SelfID()
	reloader := signal.New(docker, ropts, log)
	d := &daemon{cfg: cfg}
	d.deployer = signal.NewDeployer(reloader, cfg.ReloadWindow)
	ad := &acmeDeployer{d: d.deployer, labelPrefix: cfg.LabelPrefix, certsDir: cfg.CertsDir}
	d.manager = acme.NewManager(acme.ManagerConfig{Directory: cfg.ACMEDirectory, StateDir: cfg.StateDir, MaxOrders: cfg.MaxOrders,
		DefaultKeyType: cfg.KeyType, DefaultProfile: cfg.ACMEProfile, UnusedGrace: cfg.UnusedGrace, FlatLinks: cfg.FlatLinks},
		store, iss, ad, log)
	ad.known = func(name string) bool {
		return slices.ContainsFunc(d.manager.Status(), func(s acme.CertStatus) bool { return s.Name == name })
	}
	d.manager.SetPreflight(&challengePreflight{webroot: cfg.Webroot, d: d.deployer, r: reloader, log: log})
	d.manager.SetDryRunIssuer(dry)
	d.watcher = dockerwatch.New(docker, cfg.LabelPrefix, cfg.Debounce, log)
	if cfg.Companion {
		d.watcher.EnableCompanion()
	}
	notes := newNotifier(notifyConfig{Webhooks: cfg.Webhooks, Slack: cfg.SlackHooks, SMTPAddr: cfg.SMTPAddr, SMTPFrom: cfg.SMTPFrom,
		SMTPTo: cfg.SMTPTo, SMTPUser: cfg.SMTPUser, SMTPPass: cfg.SMTPPass, Hook: strings.Fields(cfg.DeployHook), CertsDir: cfg.CertsDir},
		cfg.StateDir, log)
	sink := sinks{notes}
	var met *metrics
	if cfg.MetricsAddr != "" {
		met = newMetrics(d.manager.Status, d.watcher.Health, func() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.problems) })
		sink = append(sink, met)
		d.deployer.OnReport(met.report)
	}
	d.manager.SetEventSink(sink)

	log.Info("edgecert starting", "version", version, "directory", cfg.ACMEDirectory, "certs_dir", cfg.CertsDir,
		"webroot", cfg.Webroot, "label_prefix", cfg.LabelPrefix)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.watcher.Run(ctx) })
	g.Go(func() error { return d.manager.Run(ctx) })
	g.Go(func() error { return serveControl(ctx, cfg.Socket, d) })
	g.Go(func() error { return notes.Run(ctx, d.manager.Status) })
	if met != nil {
		g.Go(func() error { return met.serve(ctx, cfg.MetricsAddr) })
		log.Info("metrics served", "addr", cfg.MetricsAddr, "path", "/metrics")
	}
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case snap := <-d.watcher.Snapshots():
				d.apply(snap)
			}
		}
	})
	return g.Wait()
}

// apply feeds one snapshot from dockerwatch to the signal and acme stages.
func (d *daemon) apply(snap dockerwatch.Desired) {
	d.mu.Lock()
	d.problems = snap.Problems
	d.mu.Unlock()
	var proxies []signal.Proxy
	var stopped []string
	for _, p := range snap.Proxies {
		if !p.Running {
			stopped = append(stopped, p.Name)
			continue
		}
		proxies = append(proxies, signal.Proxy{ID: p.ID, Name: p.Name, TLSPort: p.TLSPort, Group: p.Group, Starts: p.Starts,
			Signal: p.Signal, ReloadCommand: p.ReloadCommand, ConfigTest: p.ConfigTest, HasConfigTest: p.HasConfigTest, WorkerPattern: p.WorkerPattern})
	}
	// HTTP-01 needs a proxy to serve the token: with proxies labelled but none
	// running (compose is still starting them), an order would only fail.
	hold := ""
	if len(proxies) == 0 && len(stopped) > 0 {
		hold = "no proxy container is running (" + strings.Join(stopped, ", ") + ")"
	}
	d.manager.Hold(hold)
	wants := make([]acme.Want, len(snap.Certs))
	for i, c := range snap.Certs {
		wants[i] = acme.Want{Name: c.Name, Domains: c.Domains, Containers: c.Containers, KeyType: c.KeyType, Profile: c.Profile,
			Email: c.Email, Group: c.Group}
	}
	if d.deployer.SetProxies(proxies) {
		// A proxy came, went or restarted: prove every certificate again
		// (by handshake; no signal where it already serves them).
		d.manager.Redeploy()
	}
	d.manager.Update(wants)
}

func (d *daemon) status() StatusDoc {
	doc := StatusDoc{Version: version, Directory: d.cfg.ACMEDirectory, Docker: d.watcher.Health(),
		Certificates: []CertView{}, Problems: []dockerwatch.Problem{}}
	for _, s := range d.manager.Status() {
		reloads := d.deployer.Reports(s.Name)
		if reloads == nil {
			reloads = []signal.Report{}
		}
		doc.Certificates = append(doc.Certificates, CertView{CertStatus: s, Reloads: reloads})
	}
	d.mu.Lock()
	doc.Problems = append(doc.Problems, d.problems...)
	d.mu.Unlock()
	return doc
}

func (d *daemon) healthy() error {
	if h := d.watcher.Health(); !h.Connected {
		return errors.New("not connected to the Docker Engine")
	}
	return nil
}

func (d *daemon) renew(ctx context.Context, name string, force, dryRun bool) acme.RenewResult {
	if dryRun {
		return d.manager.DryRun(ctx, name)
	}
	return d.manager.Renew(ctx, name, force)
}

func socketPath() string {
	if p := os.Getenv("EDGECERT_SOCKET"); p != "" {
		return p
	}
	return "/run/edgecert/control.sock"
}

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
		if slices.Contains(c.Domains, strings.ToLower(key)) && c.State != "unused" {
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
		case c.State == "unused":
		case c.State == "failing":
			bad = append(bad, c.Name+" is failing")
		case c.State != "placeholder" && c.State != "pending" && !c.NotAfter.IsZero() && c.NotAfter.Sub(now) < warn:
			bad = append(bad, fmt.Sprintf("%s expires in %s", c.Name, c.NotAfter.Sub(now).Round(time.Minute)))
		}
	}
	return bad
}

func printStatus(w io.Writer, doc StatusDoc, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tDOMAINS\tEXPIRES\tRENEWS\tPROXIES\tLAST ERROR")
	for _, c := range doc.Certificates {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, stateText(c), strings.Join(c.Domains, ","),
			expiresText(c, now), renewsText(c), proxiesText(c), oneLine(orDash(cmp.Or(c.LastError, c.DeployError))))
	}
	tw.Flush()
	if !doc.Docker.Connected {
		fmt.Fprintln(w, "\nDocker: NOT CONNECTED (reconnecting)")
	}
	if len(doc.Problems) > 0 {
		fmt.Fprintln(w, "\nPROBLEMS (these containers are ignored until their labels are fixed)")
		for _, p := range doc.Problems {
			fmt.Fprintln(w, "  "+p.String())
		}
	}
}

func stateText(c CertView) string {
	if c.Phase != "" {
		return c.State + " (" + c.Phase + ")"
	}
	return c.State
}

func expiresText(c CertView, now time.Time) string {
	if c.NotAfter.IsZero() {
		return "-"
	}
	left := c.NotAfter.Sub(now)
	if left < 48*time.Hour {
		return fmt.Sprintf("%s (%s)", c.NotAfter.UTC().Format("2006-01-02 15:04"), left.Round(time.Minute))
	}
	return fmt.Sprintf("%s (%dd)", c.NotAfter.UTC().Format("2006-01-02 15:04"), int(left.Hours()/24))
}

func renewsText(c CertView) string {
	switch {
	case c.Waiting != "":
		return "waiting: " + c.Waiting
	case c.RenewAt.IsZero():
		return "-"
	}
	return c.RenewAt.UTC().Format("2006-01-02 15:04:05") + " (" + c.RenewSource + ")"
}

func proxiesText(c CertView) string {
	if len(c.Reloads) == 0 {
		return "-"
	}
	ok := 0
	for _, r := range c.Reloads {
		if r.OK {
			ok++
		}
	}
	return fmt.Sprintf("%d/%d proven", ok, len(c.Reloads))
}

// printDetail shows one certificate with its recent history.
func printDetail(w io.Writer, c CertView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s\n", c.Name, stateText(c))
	line := func(k, v string) {
		if v != "" && v != "-" {
			fmt.Fprintf(tw, "  %s\t%s\n", k, v)
		}
	}
	line("domains", strings.Join(c.Domains, ", "))
	line("containers", strings.Join(c.Containers, ", "))
	line("key type", c.KeyType)
	line("profile", c.Profile)
	line("serial", c.Serial)
	line("issuer", c.Issuer)
	if !c.NotAfter.IsZero() {
		line("valid", c.NotBefore.UTC().Format("2006-01-02 15:04")+" to "+expiresText(c, now))
	}
	line("renews", renewsText(c))
	if c.ARI != nil {
		line("ARI window", c.ARI.Start.UTC().Format("2006-01-02 15:04")+" to "+c.ARI.End.UTC().Format("2006-01-02 15:04")+" "+c.ARI.Explanation)
	}
	line("ARI error", c.ARIError)
	if !c.LastAttempt.IsZero() {
		line("last attempt", c.LastAttempt.UTC().Format(time.RFC3339))
	}
	line("last error", oneLine(c.LastError))
	if c.Permanent {
		line("", "(permanent: retrying soon will not help; fix the cause, then renew --force)")
	}
	line("reload error", oneLine(c.DeployError))
	if !c.RenewedTill.IsZero() {
		line("unused", "since "+c.UnusedSince.UTC().Format(time.RFC3339)+", renewed until "+c.RenewedTill.UTC().Format(time.RFC3339))
	}
	for _, r := range c.Reloads {
		verdict := "proven"
		if !r.OK {
			verdict = "FAILED at " + r.FailedStep
		}
		var steps []string
		for _, st := range r.Steps {
			steps = append(steps, fmt.Sprintf("%s %dms", st.Step, st.TookMS))
		}
		line("proxy "+r.Container, fmt.Sprintf("%s %s (%s)", verdict, r.At.UTC().Format("2006-01-02 15:04:05"), strings.Join(steps, ", ")))
	}
	tw.Flush()
	if len(c.History) > 0 {
		fmt.Fprintln(w, "  history")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i := len(c.History) - 1; i >= 0 && i >= len(c.History)-20; i-- {
			h := c.History[i]
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", h.At.UTC().Format("2006-01-02 15:04:05"), h.Kind, orDash(h.Serial), oneLine(h.Detail))
		}
		tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
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
		if *all && c.State != "unused" {
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
	case "preflight":
		return "checking that the proxy serves the challenge directory"
	case "ordering":
		return "ordering and validating with the CA"
	case "writing":
		return "writing the new pair"
	}
	if c.State == "valid" && !c.Deployed {
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
