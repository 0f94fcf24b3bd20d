package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/cluster"
	"github.com/edgecert/edgecert/acme/legoissuer"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

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
	red := redactorFor(cfg)
	log := slog.New(redactingHandler{next: h, r: red})
	lock, err := lockState(cfg.StateDir)
	if err != nil {
		fmt.Fprintf(stderr, "edgecert: %v\n", err)
		return 1
	}
	defer lock.Close()
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	legoissuer.RouteLog(log)
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		log.Error("edgecert stopped", "err", fmt.Errorf("docker client: %w", err))
		return 1
	}
	defer docker.Close()
	d, err := newDaemon(cfg, docker, log, red)
	if err == nil {
		err = d.run(ctx)
	}
	if err != nil {
		log.Error("edgecert stopped", "err", err)
		return 1
	}
	log.Info("edgecert stopped")
	return 0
}

// daemon is the running pipeline: dockerwatch -> acme -> signal, with the
// notifier, the metrics and the control socket beside it.
type daemon struct {
	cfg     Config
	log     *slog.Logger
	watcher *dockerwatch.Watcher
	stages  stages
	notes   *notifier
	metrics *metrics    // nil: no metrics endpoint
	page    *statusPage // nil: no status page
	store   *acme.Store
	cluster *cluster.Cluster // nil: one host, no etcd
	holds   *holds
	red     *redactor // every text that leaves the process goes through it

	mu       sync.Mutex
	problems []dockerwatch.Problem  // from the last snapshot
	proxies  []dockerwatch.Proxy    // from the last snapshot: labelled proxies, running or not
	certs    []dockerwatch.CertSpec // from the last snapshot: for dns-record
	issuer   *legoissuer.Issuer     // the CA's: for dns-record (the cluster's accounts in cluster mode)
}

// newDaemon builds every stage from cfg; nothing runs until run.
func newDaemon(cfg Config, docker *client.Client, log *slog.Logger, red *redactor) (*daemon, error) {
	// The engine's answer (a round trip, slower on a busy engine) comes
	// while the volume is cleaned and the stages are made.
	type detected struct {
		eng  engine
		err  error
		took time.Duration
	}
	engc := make(chan detected, 1)
	go func() {
		asked := time.Now()
		eng, err := detectEngine(context.Background(), docker)
		engc <- detected{eng, err, time.Since(asked)}
	}()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	store, err := acme.NewStore(cfg.CertsDir, acme.KeyOwner{UID: cfg.keyUID, GID: cfg.keyGID})
	if err != nil {
		return nil, err
	}
	if n, err := store.Clean(); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("leftovers of an interrupted write removed from the certificate volume", "count", n)
	}
	n, err := store.FixKeyOwners()
	if err != nil {
		return nil, fmt.Errorf("EDGECERT_KEY_OWNER: %w", err)
	}
	if n > 0 {
		log.Info("private keys given to EDGECERT_KEY_OWNER", "owner", cfg.KeyOwner, "keys", n)
	}
	for _, n := range cfg.notes {
		log.Warn("acme-companion variable", "note", n)
	}
	if cfg.CompanionDir != "" {
		// Before the Manager reads the volume: what is imported is then
		// current, with its own renewal schedule, and nothing is ordered.
		res, err := acme.ImportCompanion(cfg.CompanionDir, cfg.ACMEDirectory == legoissuer.DirectoryStaging, store, cfg.StateDir, time.Now(), log)
		if err != nil {
			return nil, fmt.Errorf("EDGECERT_COMPANION_CERTS: %w", err)
		}
		imported := 0
		for _, r := range res {
			if r.Skip == "" {
				imported++
			}
		}
		log.Info("acme-companion volume read", "dir", cfg.CompanionDir, "imported", imported, "skipped", len(res)-imported)
	}
	d := &daemon{cfg: cfg, log: log, red: red}
	var onReport func(signal.Report)
	events := eventSinks{}
	d.notes = newNotifier(notifyConfig{Webhooks: cfg.Webhooks, Slack: cfg.SlackHooks, SMTPAddr: cfg.SMTPAddr, SMTPFrom: cfg.SMTPFrom,
		SMTPTo: cfg.SMTPTo, SMTPUser: cfg.SMTPUser, SMTPPass: cfg.SMTPPass, SMTPTLS: cfg.SMTPTLS, Hook: strings.Fields(cfg.DeployHook), CertsDir: cfg.CertsDir,
		Redact: red},
		cfg.StateDir, log)
	events = append(events, d.notes)
	d.store = store
	if cfg.StatusAddr != "" {
		var auth *htpasswd
		if cfg.StatusAuth != "" {
			if auth, err = readHtpasswd(cfg.StatusAuth); err != nil {
				return nil, fmt.Errorf("EDGECERT_STATUS_AUTH_FILE: %w", err)
			}
		}
		if d.page, err = newStatusPage(d, red, auth, log); err != nil {
			return nil, err
		}
	}
	if cfg.MetricsAddr != "" {
		d.metrics = newMetrics(d)
		events = append(events, d.metrics)
		onReport = d.metrics.report
	}

	ropts := signal.NginxDefaults()
	ropts.Timeout = cfg.ReloadTimeout
	ropts.Self = signal.SelfID()
	det := <-engc
	eng := det.eng
	if det.err != nil {
		log.Warn("the engine did not say what it is; taken for Docker (Podman's differences are handled only if it answers at start)", "err", det.err)
	} else {
		log.Info("container engine", "engine", eng.Name, "engine_version", eng.Version, "took_ms", det.took.Milliseconds())
	}
	if eng.Podman {
		ropts.Top = signal.LibpodTop(docker)
	}
	// Swaps of a pair and proxies reading the files (config test to new
	// workers) take turns, so that no proxy reads one pair's two files
	// across a swap.
	files := &sync.RWMutex{}
	ropts.Files = files
	ropts.Current = func(name string) string { // a proof of an overtaken deployment accepts what is on the volume now
		info, err := store.Read(name)
		if err != nil {
			return ""
		}
		return info.Fingerprint
	}
	reloader := signal.New(signal.Docker(docker), ropts, log)
	batcher := signal.NewBatcher(reloader, cfg.ReloadWindow, onReport)
	preflight := &challengePreflight{webroot: cfg.Webroot, proxies: batcher, probe: reloader, log: log}

	icfg := legoissuer.Config{Directory: cfg.ACMEDirectory, Email: cfg.ACMEEmail, Profile: cfg.ACMEProfile, KeyType: cfg.KeyType,
		RootsFile: cfg.ACMERoots, Webroot: cfg.Webroot, StateDir: cfg.StateDir, EABKid: cfg.EABKid, EABHMAC: cfg.EABHMAC,
		DNSProviders: cfg.DNSProviders, DNSResolvers: cfg.DNSResolvers, DNSTimeout: cfg.DNSTimeout}
	dcfg := icfg
	dcfg.Directory = cfg.DryRunDir
	dry, err := legoissuer.New(dcfg, log) // a dry run shares nothing with the cluster
	if err != nil {
		return nil, err
	}
	var deployer acme.Deployer = proxyDeployer{batcher: batcher, has: store.Has, labelPrefix: cfg.LabelPrefix, certsDir: cfg.CertsDir}
	if len(cfg.EtcdEndpoints) > 0 {
		if d.cluster, err = newCluster(cfg, preflight, d.clusterCert, red, log); err != nil {
			return nil, err
		}
		icfg.Tokens, icfg.Accounts = d.cluster, d.cluster
		deployer = clusterDeployer{Deployer: deployer, cluster: d.cluster, log: log}
	}
	iss, err := legoissuer.New(icfg, log)
	if err != nil {
		return nil, err
	}
	d.issuer = iss
	mcfg := acme.ManagerConfig{
		Directory: cfg.ACMEDirectory, StateDir: cfg.StateDir, MaxOrders: cfg.MaxOrders, ForcedLimit: cfg.ForcedLimit,
		DefaultKeyType: cfg.KeyType, DefaultProfile: cfg.ACMEProfile, UnusedGrace: cfg.UnusedGrace, FlatLinks: cfg.FlatLinks,
		ReuseKey: cfg.ReuseKey, DNSConfig: legoissuer.DNSConfigID(),
		// A batch gathers for at most the window, may wait for the reload
		// its proxy is running and the rest after it if that one was slow
		// (as long as it took), then has its own: each at most
		// EDGECERT_RELOAD_TIMEOUT; past that and a margin, a deployment is stuck.
		DeployTimeout: cfg.ReloadWindow + 3*cfg.ReloadTimeout + 30*time.Second,
		OrderTimeout:  cfg.OrderTimeout,
		Redact:        red.String,
		Store:         store, Issuer: iss, DryRun: dry, Swaps: files,
		Deployer:  deployer,
		Preflight: preflight,
		Events:    events,
		Log:       log,
	}
	if d.cluster != nil {
		ci := d.cluster.Issuer(iss)
		mcfg.Issuer, mcfg.Rollbacks = ci, ci
	}
	manager := acme.NewManager(mcfg)
	d.holds = &holds{manager: manager}
	d.stages = stages{manager: manager, batcher: batcher, holds: d.holds}
	if d.cluster != nil {
		d.holds.set("cluster", "cluster: not connected yet")
	}
	d.watcher = dockerwatch.New(docker, dockerwatch.Config{
		Rules: dockerwatch.Rules{Prefix: cfg.LabelPrefix, KeyTypes: acme.KeyTypes, CertName: acme.ValidateName,
			DNSProviders: cfg.DNSProviders, IPProfile: cfg.IPProfile},
		Debounce: cfg.Debounce, Companion: cfg.Companion, Resync: cfg.DockerResync, Podman: eng.Podman}, log)
	return d, nil
}

// run runs every part until ctx ends or one fails; each goroutine belongs to
// the errgroup and ends with ctx.
func (d *daemon) run(ctx context.Context) error {
	cfg := d.cfg
	d.log.Info("edgecert starting", "version", version, "directory", cfg.ACMEDirectory, "certs_dir", cfg.CertsDir,
		"webroot", cfg.Webroot, "label_prefix", cfg.LabelPrefix, "setup_ms", time.Since(processStart).Milliseconds())
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.watcher.Run(ctx) })
	g.Go(func() error { return d.stages.manager.Run(ctx) })
	if d.cluster != nil {
		g.Go(func() error { return d.runCluster(ctx) })
	}
	g.Go(func() error { return serveControl(ctx, cfg.Socket, d, d.red) })
	g.Go(func() error { return d.notes.Run(ctx, d.stages.manager.Status) })
	if d.metrics != nil {
		g.Go(func() error { return d.metrics.serve(ctx, cfg.MetricsAddr) })
		d.log.Info("metrics served", "addr", cfg.MetricsAddr, "path", "/metrics")
	}
	if d.page != nil {
		g.Go(func() error { return d.page.serve(ctx, cfg.StatusAddr) })
		d.log.Info("status page served", "addr", cfg.StatusAddr, "auth", d.page.auth != nil)
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

// apply keeps the snapshot's label problems for status and hands the rest
// to the stages.
func (d *daemon) apply(snap dockerwatch.Desired) {
	d.mu.Lock()
	d.problems, d.proxies, d.certs = snap.Problems, snap.Proxies, snap.Certs
	d.mu.Unlock()
	if d.cluster != nil {
		// Before the Manager hears of them: an order's tokens are then
		// checked by every host that wants its names.
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ClusterTTL)
		if err := d.cluster.SetWishes(ctx, wishes(snap.Certs, d.cfg.KeyType, d.cfg.ACMEProfile)); err != nil {
			d.log.Warn("cannot publish this host's certificates to the cluster (again at the next connection)", "err", err)
		}
		cancel()
	}
	d.stages.apply(snap)
}

// versions are the versions of certificate name kept on the volume.
func (d *daemon) versions(name string) ([]*acme.Info, error) { return d.store.Versions(name) }

// status is the document `edgecert status --json` prints.
func (d *daemon) status() StatusDoc {
	doc := StatusDoc{Version: version, Directory: d.cfg.ACMEDirectory, Docker: d.watcher.Health(),
		Certificates: []CertView{}, Proxies: []ProxyView{}, Problems: []dockerwatch.Problem{}}
	for _, s := range d.stages.manager.Status() {
		reloads := d.stages.batcher.Reports(s.Name)
		if reloads == nil {
			reloads = []signal.Report{}
		}
		doc.Certificates = append(doc.Certificates, CertView{CertStatus: s, Reloads: reloads})
	}
	if d.cluster != nil {
		ok, why, since := d.cluster.Reachable()
		doc.Cluster = &ClusterView{Node: d.cluster.Node(), Reachable: ok, Error: why, Since: since}
		if ok {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			proofs, _ := d.cluster.Proofs(ctx) // none shown if etcd does not answer in time
			cancel()
			for i := range doc.Certificates {
				doc.Certificates[i].Hosts = proofs[doc.Certificates[i].Name]
			}
		}
	}
	reloads := d.stages.batcher.ProxyReloads()
	d.mu.Lock()
	doc.Problems = append(doc.Problems, d.problems...)
	for _, p := range d.proxies {
		v := ProxyView{Name: p.Name, Group: p.Group, Running: p.Running}
		if r, ok := reloads[p.ID]; ok {
			v.LastReload, v.RestUntil = &r.Last, r.RestUntil
		}
		doc.Proxies = append(doc.Proxies, v)
	}
	d.mu.Unlock()
	for _, c := range d.stages.manager.Conflicts() {
		for _, ct := range c.Containers {
			doc.Problems = append(doc.Problems, dockerwatch.Problem{Container: ct, Label: d.cfg.LabelPrefix + ".name", Err: c.Err})
		}
	}
	return doc
}

func (d *daemon) healthy() error {
	if h := d.watcher.Health(); h.Error != "" {
		return errors.New(h.Error)
	}
	if d.cluster != nil {
		if ok, why, since := d.cluster.Reachable(); !ok {
			return fmt.Errorf("cluster unreachable since %s: %s", since.UTC().Format(time.RFC3339), why)
		}
	}
	for _, c := range d.stages.manager.Status() {
		if c.OrderStuck != "" {
			return fmt.Errorf("certificate %s: %s", c.Name, c.OrderStuck)
		}
	}
	return nil
}

// dnsRecords are the DNS-PERSIST-01 records of the certificate named key
// (or wanted for the domain key), or of the domains key lists when no
// certificate is: what to set before labelling a container.
func (d *daemon) dnsRecords(ctx context.Context, key string) (dnsRecordAnswer, error) {
	d.mu.Lock()
	var spec *dockerwatch.CertSpec
	for i, c := range d.certs {
		if c.Name == key {
			spec = &d.certs[i]
		}
	}
	for i, c := range d.certs {
		if spec == nil && slices.Contains(c.Domains, strings.ToLower(key)) {
			spec = &d.certs[i]
		}
	}
	ans := dnsRecordAnswer{}
	if spec != nil {
		ans.Name, ans.Domains, ans.Email = spec.Name, spec.Domains, spec.Email
	}
	d.mu.Unlock()
	if spec == nil {
		domains, err := dockerwatch.ParseDomains(key)
		if err != nil {
			return ans, fmt.Errorf("no certificate named or covering %q, and it is not a list of domains: %w", key, err)
		}
		ans.Domains = domains
	}
	if i := slices.IndexFunc(ans.Domains, dockerwatch.IsIP); i >= 0 {
		return ans, fmt.Errorf("%s is an IP address: a CA validates addresses over http-01 only", ans.Domains[i])
	}
	recs, err := d.issuer.PersistRecords(ctx, ans.Email, ans.Domains)
	ans.Records = recs
	return ans, err
}

func (d *daemon) forget(ctx context.Context, name string) acme.RenewResult {
	return d.stages.manager.Forget(ctx, name)
}

func (d *daemon) rollback(ctx context.Context, name, serial string) acme.RenewResult {
	return d.stages.manager.Rollback(ctx, name, serial)
}

func (d *daemon) renew(ctx context.Context, name string, force, dryRun bool) acme.RenewResult {
	if dryRun {
		return d.stages.manager.DryRun(ctx, name)
	}
	return d.stages.manager.Renew(ctx, name, force)
}
