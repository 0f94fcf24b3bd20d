// Package dockerwatch turns the Docker Engine's containers and their
// edgecert labels into whole desired-state snapshots.
//
// One session = subscribe to events, list every running container, publish,
// then relist at once whenever an event hints that something changed.
// Any stream error ends the session and a backoff runs a new one, which lists
// again: events are hints, the full list is the truth.
package dockerwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// dockerAPI is the part of the Docker client the watcher uses.
type dockerAPI interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) // acme-companion mode only
}

// Config says what the watcher looks for.
type Config struct {
	Rules
	// Debounce, when set, waits that long after an event before listing,
	// to gather a burst into one list. At 0 (the default) an event is
	// listed at once, and only the events that come while a list runs are
	// gathered into the next one.
	Debounce time.Duration
	// Companion also reads acme-companion's LETSENCRYPT_HOST / ACME_HOST
	// and LETSENCRYPT_EMAIL / ACME_EMAIL from containers' environment, and
	// takes nginx-proxy's labelled container as a proxy.
	Companion bool
	// Resync is how often the containers are listed again and the event
	// stream checked against the engine's own record, even when no event
	// came (default 1m).
	Resync time.Duration
	// Timeout bounds each call to the engine: a list, an inspect, opening
	// the event stream, the stream check (default 30s). A call that takes
	// longer ends the session: the watcher reconnects and lists again.
	Timeout time.Duration
	// Podman: the engine is Podman (its Docker-compatible API), whose event
	// stream differs from Docker's (podman.go).
	Podman bool
}

// withDefaults fills in what c leaves zero.
func (c Config) withDefaults() Config {
	if c.Resync <= 0 {
		c.Resync = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// HealthBound is how long the engine may go without answering a list
// before Health reports it, for the given configuration: a missed resync
// and a timed-out call.
func (c Config) HealthBound() time.Duration {
	c = c.withDefaults()
	return 2*c.Resync + c.Timeout
}

// Watcher follows the engine and publishes Desired snapshots.
type Watcher struct {
	api  dockerAPI
	cfg  Config
	log  *slog.Logger
	out  chan Desired
	envs map[string]envVars // companion mode: container ID -> its variables (env never changes)

	mu         sync.Mutex
	connected  bool
	lastErr    string // why the last session ended
	lastSync   time.Time
	reconnects int
	problems   map[Problem]bool
	starts     map[string]int // container ID -> start events seen (restarts between two lists)
}

// New returns a watcher.
func New(api dockerAPI, cfg Config, log *slog.Logger) *Watcher {
	return &Watcher{api: api, cfg: cfg.withDefaults(), log: log, out: make(chan Desired, 1), envs: map[string]envVars{}}
}

type envVars struct {
	hosts, which, email, challenge string
	keySize, keyVar, profile       string
	single                         bool
}

// companionUnhonoured are acme-companion's variables on a proxied
// container that edgecert does not take: each set one is named once.
var companionUnhonoured = []string{"ACME_CA_URI", "LETSENCRYPT_TEST", "ACME_EAB_KID", "ACME_EAB_HMAC_KEY", "ZEROSSL_API_KEY",
	"ACME_OCSP", "ACME_PRE_HOOK", "ACME_POST_HOOK", "ACME_PREFERRED_CHAIN", "ACME_RENEW_AFTER", "ACME_RENEW_PRIVATE_KEYS",
	"ACME_RESTART_CONTAINER", "LETSENCRYPT_RESTART_CONTAINER"}

// companionEnv reads (once per container) its acme-companion variables.
func (w *Watcher) companionEnv(ctx context.Context, id string) (envVars, error) {
	if v, ok := w.envs[id]; ok {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	info, err := w.api.ContainerInspect(ctx, id)
	if err != nil {
		return envVars{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	var v envVars
	if info.Config != nil {
		env := map[string]string{}
		for _, kv := range info.Config.Env {
			if k, val, ok := strings.Cut(kv, "="); ok {
				env[k] = val
			}
		}
		for _, k := range []string{"LETSENCRYPT_HOST", "ACME_HOST"} {
			if env[k] != "" {
				v.hosts, v.which = env[k], k
				break
			}
		}
		v.email = cmp.Or(env["LETSENCRYPT_EMAIL"], env["ACME_EMAIL"])
		v.challenge = env["ACME_CHALLENGE"]
		v.single = strings.EqualFold(cmp.Or(env["ACME_SINGLE_DOMAIN_CERTS"], env["LETSENCRYPT_SINGLE_DOMAIN_CERTS"]), "true")
		for _, k := range []string{"ACME_KEYSIZE", "LETSENCRYPT_KEYSIZE"} {
			if env[k] != "" {
				v.keySize, v.keyVar = env[k], k
				break
			}
		}
		v.profile = env["ACME_CERT_PROFILE"]
		if v.hosts != "" {
			for _, k := range companionUnhonoured {
				if _, ok := env[k]; ok {
					w.log.Warn("acme-companion variable not honoured on this container: edgecert's own settings apply (see README, Coming from acme-companion)",
						"container", strings.TrimPrefix(info.Name, "/"), "var", k)
				}
			}
		}
		if _, ok := env["ACMESH_DNS_API_CONFIG"]; ok {
			w.log.Warn("acme-companion's ACMESH_DNS_API_CONFIG is not translated: DNS-01 goes through edgecert's EDGECERT_DNS_PROVIDER and its credentials",
				"container", strings.TrimPrefix(info.Name, "/"))
		}
	}
	w.envs[id] = v
	return v, nil
}

// Snapshots delivers the latest Desired state; an unread snapshot is replaced
// by a newer one, so a slow reader only ever sees the newest.
func (w *Watcher) Snapshots() <-chan Desired { return w.out }

// Health reports whether the event stream is up and when the engine last
// answered a full list.
type Health struct {
	Connected  bool      `json:"connected"`
	LastSync   time.Time `json:"last_sync"`
	Reconnects int       `json:"reconnects"`
	Error      string    `json:"error,omitempty"` // why edgecert is not following the engine; "" when it is
}

// Health returns the watcher's connection state.
func (w *Watcher) Health() Health {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := Health{Connected: w.connected, LastSync: w.lastSync, Reconnects: w.reconnects}
	switch {
	case !w.connected && w.lastErr != "":
		h.Error = "not connected to the Docker Engine: " + w.lastErr
	case !w.connected:
		h.Error = "not connected to the Docker Engine yet"
	case time.Since(w.lastSync) > w.cfg.HealthBound():
		h.Error = fmt.Sprintf("the Docker Engine has not answered a container list for %s", time.Since(w.lastSync).Round(time.Second))
	}
	return h
}

// Run follows the engine until ctx ends. It returns nil on cancellation;
// engine errors are logged and retried with backoff, never returned.
func (w *Watcher) Run(ctx context.Context) error {
	const minDelay, maxDelay = time.Second, 30 * time.Second
	delay := minDelay
	for {
		started := time.Now()
		err := w.session(ctx)
		w.mu.Lock()
		w.connected, w.lastErr = false, fmt.Sprint(err)
		w.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			delay = minDelay
		}
		w.log.Warn("docker event stream lost; will list containers again", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, maxDelay)
		w.mu.Lock()
		w.reconnects++
		w.mu.Unlock()
	}
}

// streamFilter is what the watcher follows: containers coming and going.
func streamFilter() filters.Args {
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))
	for _, a := range watched {
		f.Add("event", string(a))
	}
	return f
}

func (w *Watcher) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe before listing, so nothing that happens in between is missed.
	msgs, errs, err := w.subscribe(ctx)
	if err != nil {
		return err
	}
	if err := w.sync(ctx); err != nil {
		return err
	}
	checked := time.Now()
	delivered := map[eventKey]time.Time{} // what the stream gave, for the stream check

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				return fmt.Errorf("event stream closed")
			}
			return fmt.Errorf("event stream: %w", err)
		case m := <-msgs:
			if !w.relevant(&m) {
				continue
			}
			w.note(m, delivered)
			if w.cfg.Debounce > 0 {
				if !pending {
					pending = true
					timer.Reset(w.cfg.Debounce)
				}
				continue
			}
			// No wait: list at once. What is already queued goes into this
			// one list; what comes while it runs, into the next.
		queued:
			for {
				select {
				case m := <-msgs:
					if w.relevant(&m) {
						w.note(m, delivered)
					}
				default:
					break queued
				}
			}
			if err := w.sync(ctx); err != nil {
				return err
			}
		case <-timer.C:
			pending = false
			if err := w.sync(ctx); err != nil {
				return err
			}
		case <-resync.C:
			// The list is the truth; the check tells a stalled stream from
			// a quiet host.
			if err := w.sync(ctx); err != nil {
				return err
			}
			until := time.Now().Add(-streamLag)
			if w.cfg.Podman {
				// Podman's compatible API answers no past container event
				// (podman.go): the list above is the only check.
				continue
			}
			if err := w.checkStream(ctx, checked, until, delivered); err != nil {
				return err
			}
			checked = until
			for k, at := range delivered {
				if at.Before(until.Add(-streamLag)) {
					delete(delivered, k)
				}
			}
		}
	}
}

// note records one event: for the stream check, and a start for the
// restart count.
func (w *Watcher) note(m events.Message, delivered map[eventKey]time.Time) {
	w.log.Debug("docker event", "container", m.Actor.Attributes["name"], "action", string(m.Action))
	delivered[keyOf(m)] = time.Now()
	if m.Action == events.ActionStart {
		w.mu.Lock()
		if w.starts == nil {
			w.starts = map[string]int{}
		}
		w.starts[m.Actor.ID]++
		w.mu.Unlock()
	}
}

// subscribe opens the event stream. The Docker client returns only once
// the engine has answered, so an engine (or proxy) that holds the request
// would hold the session for good: it is given Config.Timeout.
func (w *Watcher) subscribe(ctx context.Context) (<-chan events.Message, <-chan error, error) {
	type opened struct {
		msgs <-chan events.Message
		errs <-chan error
	}
	octx, cancel := context.WithCancel(ctx)
	if w.cfg.Podman {
		return w.subscribePodman(octx, cancel)
	}
	ch := make(chan opened, 1)
	go func() {
		m, e := w.api.Events(octx, events.ListOptions{Filters: streamFilter()})
		ch <- opened{m, e}
	}()
	select {
	case o := <-ch:
		context.AfterFunc(ctx, cancel) // the stream lives as long as the session
		return o.msgs, o.errs, nil
	case <-time.After(w.cfg.Timeout):
		cancel()
		<-ch
		return nil, nil, fmt.Errorf("the engine did not open the event stream within %s", w.cfg.Timeout)
	}
}

// streamLag is how long an event may take to come down the stream.
const streamLag = 2 * time.Second

type eventKey struct {
	id, action string
	nano       int64
}

func keyOf(m events.Message) eventKey {
	return eventKey{m.Actor.ID, string(m.Action), m.TimeNano}
}

// checkStream asks the engine for the events between since and until and
// fails if the stream did not deliver one of them (a stream that stalled
// with its connection open) or if the engine does not answer in time.
func (w *Watcher) checkStream(ctx context.Context, since, until time.Time, delivered map[eventKey]time.Time) error {
	if !until.After(since) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	msgs, errs := w.api.Events(ctx, events.ListOptions{Filters: streamFilter(), Since: unixNano(since), Until: unixNano(until)})
	missed := 0
	for {
		select {
		case m := <-msgs:
			if _, ok := delivered[keyOf(m)]; !ok {
				missed++
			}
		case err := <-errs:
			switch {
			case errors.Is(err, io.EOF) || err == nil:
				if missed > 0 {
					return fmt.Errorf("the event stream stalled: it missed %d events the engine reports", missed)
				}
				return nil
			case ctx.Err() != nil:
				return fmt.Errorf("the engine did not answer an events query within %s", w.cfg.Timeout)
			default:
				return fmt.Errorf("events query: %w", err)
			}
		}
	}
}

func unixNano(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// sync lists every container and publishes the resulting snapshot.
func (w *Watcher) sync(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	began := time.Now()
	list, err := w.api.ContainerList(lctx, container.ListOptions{All: true})
	cancel()
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	w.log.Debug("containers listed", "count", len(list), "took_ms", time.Since(began).Milliseconds())
	cs := make([]Container, 0, len(list))
	w.mu.Lock()
	starts := w.starts
	w.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range list {
		running := s.State == container.StateRunning
		c := Container{ID: s.ID, Created: s.Created, Running: running, Starts: starts[s.ID], Labels: s.Labels, Name: s.ID}
		if len(s.Names) > 0 {
			c.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		seen[s.ID] = true
		if w.cfg.Companion {
			_, c.NginxProxy = s.Labels[NginxProxyLabel]
			if running {
				v, err := w.companionEnv(ctx, s.ID)
				if err != nil {
					return err
				}
				c.CompanionHosts, c.CompanionVar, c.CompanionEmail, c.CompanionChallenge, c.CompanionSingle = v.hosts, v.which, v.email, v.challenge, v.single
				c.CompanionKeySize, c.CompanionKeyVar, c.CompanionProfile = v.keySize, v.keyVar, v.profile
			}
		}
		if !hasPrefix(s.Labels, w.cfg.Prefix+".") && !c.NginxProxy && c.CompanionHosts == "" {
			continue
		}
		cs = append(cs, c)
	}
	w.mu.Lock()
	for id := range w.starts {
		if !seen[id] {
			delete(w.starts, id) // removed containers
		}
	}
	for id := range w.envs {
		if !seen[id] {
			delete(w.envs, id)
		}
	}
	w.mu.Unlock()
	d := Parse(w.cfg.Rules, cs)
	w.logProblems(d.Problems)
	// Subscribed and listed: connected, before anyone sees the snapshot.
	w.mu.Lock()
	w.lastSync, w.connected = time.Now(), true
	w.mu.Unlock()
	select { // latest wins: drop a snapshot nobody has read yet
	case <-w.out:
	default:
	}
	w.out <- d
	return nil
}

// logProblems logs each problem once, when it first appears.
func (w *Watcher) logProblems(ps []Problem) {
	now := make(map[Problem]bool, len(ps))
	for _, p := range ps {
		now[p] = true
		if !w.problems[p] {
			w.log.Error("invalid label; this container is ignored until it is fixed", "container", p.Container, "label", p.Label, "err", p.Err)
		}
	}
	w.problems = now
}

func hasPrefix(labels map[string]string, p string) bool {
	for k := range labels {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}
