// Package signal makes a proxy container load new certificate files and
// proves that it did: config test through exec, worker PIDs through top, the
// reload signal, every live worker replaced, then a TLS handshake that shows
// the new certificate. It knows nothing of ACME or labels.
package signal

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
)

// execAPI runs a command in a container.
type execAPI interface {
	ContainerExecCreate(ctx context.Context, id string, options container.ExecOptions) (container.ExecCreateResponse, error)
	// ExecOutput starts the exec and streams its multiplexed output until
	// the command ends; see Docker.
	ExecOutput(ctx context.Context, execID string) (io.ReadCloser, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
}

// procAPI looks at and signals a container's processes.
type procAPI interface {
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerTop(ctx context.Context, id string, arguments []string) (container.TopResponse, error)
	ContainerKill(ctx context.Context, id, signal string) error
}

// Engine is the part of the Docker client the reloader uses.
type Engine interface {
	execAPI
	procAPI
}

// Options say how to reload and how to recognise the proxy's workers.
type Options struct {
	Signal        string        // sent with docker kill; default HUP
	ReloadCommand []string      // run with docker exec instead of the signal, when set
	ConfigTest    []string      // run with docker exec before signalling; empty: no test
	WorkerPattern string        // a ps CMD containing this is a worker
	ShuttingDown  string        // ...unless it also contains this (an old worker draining)
	Timeout       time.Duration // for all workers to be new, and for the handshake to show the certificate
	Self          string        // this container's ID or name, to find a shared network; "" if not in a container
	// Files, when set, is held shared from the config test until the new
	// workers run, while the proxy reads the certificate files; swaps take
	// it exclusively, so the proxy never reads one pair's two files across
	// a swap.
	Files interface {
		RLock()
		RUnlock()
	}
	// Current, when set, is the fingerprint of what the volume holds now
	// for a certificate name: a proof of an older deployment accepts it
	// (a later renewal overtook it; two from one second cannot be told
	// apart by their dates).
	Current func(name string) string
	// Top, when set, lists a proxy's processes instead of the engine's
	// docker top (Podman's: LibpodTop).
	Top func(ctx context.Context, id string) (container.TopResponse, error)
}

// NginxDefaults are the options for nginx.
func NginxDefaults() Options {
	return Options{Signal: "HUP", ConfigTest: []string{"nginx", "-t"}, WorkerPattern: "nginx: worker process",
		ShuttingDown: "is shutting down", Timeout: 30 * time.Second}
}

// Proxy is a container to reload.
type Proxy struct {
	ID      string
	Name    string
	TLSPort int
	Group   string // "" serves every certificate; otherwise only certificates of this group
	Starts  int    // start events seen: a change means the proxy restarted

	// Per-proxy overrides of the Reloader's options (Apache, HAProxy, ...).
	Signal        string   // "" for Options.Signal
	ReloadCommand []string // exec this instead of sending a signal (nginx-proxy: nginx -s reload)
	ConfigTest    []string // used when HasConfigTest; empty disables the test
	HasConfigTest bool
	WorkerPattern string // "" for Options.WorkerPattern
}

// Serves says whether the proxy is to serve certificates of group.
func (p Proxy) Serves(group string) bool {
	return p.Group == "" || group == "" || p.Group == group
}

// Cert is the certificate the proxy must serve after the reload.
type Cert struct {
	Name        string
	Group       string // "" for every proxy
	Domains     []string
	Serial      string
	Fingerprint string    // SHA-256 of the leaf, hex
	Written     time.Time // when its files became current; zero if unknown
	// KeyAlg tells another version of it (the same names and key
	// algorithm) from another certificate; zero: names alone.
	KeyAlg x509.PublicKeyAlgorithm
}

// Reloader reloads proxies, never two reloads at once on one container.
type Reloader struct {
	api  Engine
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{} // per container: holds a token while a reload runs
}

// New returns a Reloader.
func New(api Engine, opts Options, log *slog.Logger) *Reloader {
	return &Reloader{api: api, opts: opts, log: log, locks: map[string]chan struct{}{}}
}

// ErrNotServed means the reload was signalled but the proof failed.
var ErrNotServed = errors.New("proxy does not serve the new certificate")

// lock waits, until ctx ends, for the container's other reload to finish.
func (r *Reloader) lock(ctx context.Context, id string) (unlock func(), err error) {
	r.mu.Lock()
	l, ok := r.locks[id]
	if !ok {
		l = make(chan struct{}, 1)
		r.locks[id] = l
	}
	r.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("another reload of this container is still running: %w", ctx.Err())
	}
}

// optsFor merges p's overrides into the Reloader's options.
func (r *Reloader) optsFor(p Proxy) Options {
	o := r.opts
	if p.Signal != "" {
		o.Signal = p.Signal
	}
	if len(p.ReloadCommand) > 0 {
		o.ReloadCommand = p.ReloadCommand
	}
	if p.HasConfigTest {
		o.ConfigTest = p.ConfigTest
	}
	if p.WorkerPattern != "" {
		o.WorkerPattern = p.WorkerPattern
	}
	return o
}

// Ensure makes p serve every certificate of cs, with at most one reload,
// and returns what it did step by step. Report.OK is false when any step
// failed; CertErrors names certificates the proxy still does not serve.
// The whole of it, waiting for another reload of p included, takes at most
// Options.Timeout: a step still running then fails as "timed out".
func (r *Reloader) Ensure(ctx context.Context, p Proxy, cs []Cert) Report {
	opts := r.optsFor(p)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	rep := Report{Container: p.Name, At: time.Now()}
	for _, c := range cs {
		rep.Certs = append(rep.Certs, c.Name)
	}
	names := strings.Join(rep.Certs, ",")
	fail := func(err error) Report {
		rep.Error = err.Error()
		rep.FailedStep = rep.Steps[len(rep.Steps)-1].Step
		r.log.Error("reload failed", "container", p.Name, "cert", names, "step", rep.FailedStep, "err", err)
		return rep
	}
	// step records one step; one cut short by the deadline says so.
	step := func(name string, f func() (string, error)) error {
		return rep.step(name, func() (string, error) {
			detail, err := f()
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("timed out after %s: %w", opts.Timeout, err)
			}
			return detail, err
		})
	}

	var unlock func()
	if err := step("wait", func() (string, error) {
		var err error
		unlock, err = r.lock(ctx, p.ID)
		return "", err
	}); err != nil {
		return fail(fmt.Errorf("%s: %w", p.Name, err))
	}
	defer unlock()
	rep.Steps = rep.Steps[:len(rep.Steps)-1] // waiting for nobody is not worth a line

	var addrs []string
	var started time.Time
	mainPID := 0
	if err := step("inspect", func() (string, error) {
		cctx, cancel := call(ctx)
		defer cancel()
		info, err := r.api.ContainerInspect(cctx, p.ID)
		if err != nil {
			return "", err
		}
		if info.State != nil && info.State.Restarting {
			return "", fmt.Errorf("restarting in a loop (restart count %d): not signalled; see docker logs %s", info.RestartCount, p.Name)
		}
		if info.State == nil || !info.State.Running {
			return "not running", errNotRunning
		}
		mainPID = info.State.Pid
		started, _ = time.Parse(time.RFC3339Nano, info.State.StartedAt)
		addrs = r.addresses(ctx, info, p.TLSPort)
		return strings.Join(addrs, " "), nil
	}); err != nil {
		if errors.Is(err, errNotRunning) {
			// A stopped proxy reads the files when it starts; nothing to do.
			rep.Steps[len(rep.Steps)-1].OK = true
			rep.OK = true
			return rep
		}
		return fail(fmt.Errorf("inspect %s: %w", p.Name, err))
	}

	if began := time.Now(); len(addrs) > 0 && allServed(ctx, addrs, cs, r.opts.Current) {
		rep.Steps = append(rep.Steps, Step{Step: "check", OK: true, Detail: "already serving " + names, TookMS: time.Since(began).Milliseconds()})
		rep.OK = true
		r.log.Debug("proxy already serves the certificates; no signal", "container", p.Name, "certs", len(cs), "took_ms", time.Since(began).Milliseconds())
		return rep
	}
	if startedAfter(started, cs) {
		// It read every file when it started: a signal would only make it
		// read them again. Reachable, it must show them (it may still be
		// starting to listen); if it does not, its configuration changed
		// since it started, and it is reloaded as any other.
		detail := "started at " + started.UTC().Format(time.RFC3339Nano) + ", after " + names + " were written: it read them then"
		if len(addrs) == 0 || servedWithin(ctx, addrs, cs, startingWait, r.opts.Current) {
			rep.Steps = append(rep.Steps, Step{Step: "check", OK: true, Detail: detail})
			rep.OK = true
			return rep
		}
	}

	// The files stay put from the config test until the new workers have
	// loaded them.
	unlockFiles := func() {}
	if f := r.opts.Files; f != nil {
		f.RLock()
		var once sync.Once
		unlockFiles = func() { once.Do(f.RUnlock) }
	}
	defer unlockFiles()
	// The config test and the first look at the workers run together.
	type found struct {
		pids []int
		err  error
	}
	first := make(chan found, 1)
	go func() {
		ps, err := r.workers(ctx, p.ID, opts, mainPID)
		first <- found{ps, err}
	}()
	if len(opts.ConfigTest) > 0 {
		if err := step("config_test", func() (string, error) {
			out, err := r.exec(ctx, p.ID, opts.ConfigTest)
			switch {
			case err == nil || ctx.Err() != nil:
			case strings.Contains(out, "key values mismatch"):
				// A certificate and a key read across a swap by another
				// reader of the volume: the next read sees one pair.
				out, err = r.exec(ctx, p.ID, opts.ConfigTest)
			case errors.Is(err, errStreamLost):
				// The output stream broke, not the test: once more.
				r.log.Warn("a config test's output stream broke; running it again", "container", p.Name, "err", err)
				out, err = r.exec(ctx, p.ID, opts.ConfigTest)
			}
			return out, err
		}); err != nil {
			<-first
			return fail(fmt.Errorf("config test %q in %s failed, no signal sent: %w", strings.Join(opts.ConfigTest, " "), p.Name, err))
		}
	}

	var before []int
	if err := step("workers_before", func() (string, error) {
		f := <-first
		before = f.pids
		err := f.err
		if err == nil && len(before) == 0 {
			err = fmt.Errorf("no process matches %q", opts.WorkerPattern)
		}
		return pids(before), err
	}); err != nil {
		return fail(fmt.Errorf("worker PIDs of %s: %w", p.Name, err))
	}

	if len(opts.ReloadCommand) > 0 {
		// For images whose main process is not the server (nginx-proxy runs
		// forego): ask the server itself, then prove it the same way.
		if err := step("signal", func() (string, error) {
			out, err := r.exec(ctx, p.ID, opts.ReloadCommand)
			return strings.Join(opts.ReloadCommand, " ") + " " + out, err
		}); err != nil {
			return fail(fmt.Errorf("reload command %q in %s: %w", strings.Join(opts.ReloadCommand, " "), p.Name, err))
		}
	} else if err := step("signal", func() (string, error) {
		cctx, cancel := call(ctx)
		defer cancel()
		return opts.Signal, r.api.ContainerKill(cctx, p.ID, opts.Signal)
	}); err != nil {
		return fail(fmt.Errorf("send %s to %s: %w", opts.Signal, p.Name, err))
	}
	rep.Reloaded = true

	if err := step("workers_new", func() (string, error) { return r.waitNewWorkers(ctx, p.ID, opts, mainPID, before) }); err != nil {
		return fail(fmt.Errorf("%s did not reload (it keeps its old configuration; see its error log): %w", p.Name, err))
	}
	unlockFiles()

	if len(addrs) == 0 {
		rep.Steps = append(rep.Steps, Step{Step: "handshake", OK: true, Detail: "skipped: edgecert shares no network with this container"})
		r.log.Warn("reload not verified by handshake: edgecert shares no network with the proxy", "container", p.Name, "cert", names)
	} else {
		prove(ctx, p.Name, addrs, cs, opts.Timeout, r.opts.Current, &rep)
		var details []string
		for _, c := range cs {
			if e, ok := rep.CertErrors[c.Name]; ok {
				details = append(details, c.Name+": "+strings.TrimPrefix(e, ErrNotServed.Error()+": "+p.Name+": "))
			}
		}
		if len(rep.CertErrors) > 0 {
			return fail(fmt.Errorf("%w for %d of %d certificates: %s", ErrNotServed, len(rep.CertErrors), len(cs), strings.Join(details, "; ")))
		}
	}
	rep.OK = true
	for _, c := range cs {
		if hint, ok := rep.Unserved[c.Name]; ok {
			r.log.Warn("the proxy answers for a certificate's name with another certificate; not retried until its next reload", "container", p.Name, "cert", c.Name, "domains", c.Domains, "hint", hint)
		}
	}
	r.log.Info("reload proven", "container", p.Name, "cert", names, "steps", rep.summary())
	return rep
}

var errNotRunning = errors.New("not running")

// startingWait is how long a proxy that has just started may take to
// serve what it read at its start.
const startingWait = 5 * time.Second

// servedWithin says whether every certificate of cs is served on addrs
// within wait (and ctx).
func servedWithin(ctx context.Context, addrs []string, cs []Cert, wait time.Duration, current func(string) string) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if allServed(ctx, addrs, cs, current) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startedAfter says whether a proxy that started at started read the
// current files of every certificate of cs.
func startedAfter(started time.Time, cs []Cert) bool {
	if started.IsZero() {
		return false
	}
	for _, c := range cs {
		if c.Written.IsZero() || !started.After(c.Written) {
			return false
		}
	}
	return true
}
