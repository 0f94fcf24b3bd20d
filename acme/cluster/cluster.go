// Package cluster runs edgecert on several hosts that share one etcd: one
// order per certificate cluster-wide, HTTP-01 tokens on every host before
// the CA validates, certificates and keys (sealed) shared, and every host
// deploying and proving on its own. It knows nothing of Docker, nginx or
// lego: it wraps acme's issuer, and cmd/edgecert wires it in. It is the
// only package that imports etcd's client.
//
// Keys, under the prefix (EDGECERT_ETCD_PREFIX, default /edgecert/):
//
//	nodes/<node>              the host is alive (its session's lease)
//	wants/<node>              the certificates its containers ask for (lease)
//	locks/<cert>/...          who orders <cert> now (an etcd mutex on the lease)
//	certs/<cert>              the current certificate, chain and sealed key
//	retry/<cert>              the cluster's retry schedule after a failed order
//	ari/<serial>              the CA's last renewal info for a certificate
//	tokens/<token>            an HTTP-01 token every host serves (the orderer's lease)
//	acks/<token>/<node>       a host serves it (that host's lease)
//	proofs/<cert>/<node>      which serial the host's proxies were proven to serve (lease)
//	accounts/<id>             the ACME account: key (sealed) and registration
//	keycheck                  which key signs the documents (its id): written once
//
// Every value but the nodes/ and acks/ markers is a document signed with
// the cluster key (seal.go); private keys are sealed with it too.
//
// <cert> is the certificate's identity across hosts: a hash of its sorted
// names, key type, ACME profile and CA directory, so hosts that name it
// differently share it, and hosts on different CAs (a rolling move from
// staging to production) never see, take or wake on each other's.
package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/edgecert/edgecert/acme"
)

// Config configures a host's membership.
type Config struct {
	Endpoints []string
	TLS       *tls.Config // nil: plain connections
	Username  string
	Password  string
	Prefix    string // every key lives under it; ends with "/"
	Node      string // this host's name, unique in the cluster
	Secret    []byte // seals private keys, signs every document
	// PreviousSecret, while the secret is rotated: what it sealed and
	// signed still opens, and the first host that has both moves the
	// cluster to Secret.
	PreviousSecret []byte
	Directory      string // the CA directory this host orders from (part of every certificate's identity)
	// TTL is the lease of this host's session: a host that dies lets go of
	// its locks, tokens and wishes this long after.
	TTL time.Duration
	// AckWait bounds how long an order waits for the other hosts to serve
	// its tokens.
	AckWait time.Duration
	// Webroot is where tokens other hosts order are written, for this
	// host's proxies to serve.
	Webroot string
	// Check, when set, fetches a token through this host's own proxies
	// before it is acknowledged (its preflight).
	Check TokenChecker
	// OnCert is called (from Run's goroutines) when another host stores a
	// certificate this host wants: this host may then take it.
	OnCert func(StoredCert)
	// Redact is applied to an error's text before it is stored in etcd
	// (the retry schedule's reason). nil: none.
	Redact func(string) string
	Log    *slog.Logger
}

// TokenChecker makes sure a proxy of this host serves an HTTP-01 token.
type TokenChecker interface {
	CheckToken(ctx context.Context, domain, token, keyAuth string) error
}

// Cluster is this host's membership of the cluster.
type Cluster struct {
	cfg       Config
	clientCfg clientv3.Config
	// cli is made by Run (connect) before the first session; everything
	// else uses it only with a session, so after it is set.
	cli  *clientv3.Client
	seal *sealer
	log  *slog.Logger

	mu      sync.Mutex
	session *concurrency.Session // nil while etcd is unreachable
	down    string               // why etcd is unreachable ("" when reachable)
	since   time.Time            // when down last changed
	wants   []Wish               // this host's, republished on every new session
	// kept are certificates this host was issued but could not store (its
	// lease was lost while it ordered): stored at the next session, unless
	// the cluster has a newer one by then.
	kept map[string]keptCert
	// reported: the documents that did not verify, by key, and why (each
	// reported once).
	reported map[string]string
	// locals are this host's locks of each certificate identity (one
	// order at a time per identity on this host; etcd's mutex is
	// re-entrant on one session). A few bytes per identity ever ordered.
	locals map[string]chan struct{}
	// served are the other hosts' tokens this host wrote into its webroot,
	// by etcd key: removed at reconnection if withdrawn meanwhile.
	served map[string]bool
	// proofs are this host's proofs by certificate identity, published
	// again at every new session (they live on its lease).
	proofs map[string]Proof
	// oldLease is a lost session's lease not revoked yet (only Run's
	// goroutine uses it).
	oldLease clientv3.LeaseID
	changed  chan struct{} // closed and replaced at every change of reachability
}

// Wish is one certificate this host's containers ask for, its key type and
// profile resolved (the defaults filled in).
type Wish struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	KeyType string   `json:"key_type,omitempty"`
	Profile string   `json:"profile,omitempty"`
}

// ID is a certificate's identity across hosts: its names (in any order),
// key type, profile and CA directory.
func ID(domains []string, keyType, profile, directory string) string {
	d := slices.Clone(domains)
	slices.Sort(d)
	sum := sha256.Sum256([]byte(strings.Join(d, ",") + "|" + keyType + "|" + profile + "|" + directory))
	return hex.EncodeToString(sum[:10])
}

// id is the identity of this host's wish w.
func (c *Cluster) id(w Wish) string { return ID(w.Domains, w.KeyType, w.Profile, c.cfg.Directory) }

// TLSConfig is the client TLS for etcd, as etcdctl's --cacert, --cert and
// --key give it: ca (PEM) instead of the system roots when set, and a
// client certificate when certFile and keyFile are.
func TLSConfig(ca, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pemBytes, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("EDGECERT_ETCD_CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("EDGECERT_ETCD_CA: no PEM certificate in %s", ca)
		}
	}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("EDGECERT_ETCD_CERT/KEY: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

// New connects to etcd (lazily: an unreachable etcd at start is waited for
// by Run, not an error here).
func New(cfg Config) (*Cluster, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints")
	}
	if cfg.Node == "" || strings.ContainsAny(cfg.Node, "/ ") {
		return nil, fmt.Errorf("node name %q: want a name without / or spaces", cfg.Node)
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.TTL < 2*time.Second {
		cfg.TTL = 10 * time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s, err := newKeyring(cfg.Secret, cfg.PreviousSecret)
	if err != nil {
		return nil, err
	}
	ccfg := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// gRPC waits up to 2 minutes between attempts by default: a host
		// whose etcd comes back must be back in the cluster within seconds.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 3 * time.Second,
			Backoff: grpcbackoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second}})},
		Logger: zap.NewNop(), // its own log is not slog; failures reach ours as errors
	}
	return &Cluster{cfg: cfg, clientCfg: ccfg, seal: s, log: cfg.Log.With("node", cfg.Node),
		down: "not connected yet", since: time.Now(), changed: make(chan struct{})}, nil
}

// connect makes the etcd client, once. With a user and password the client
// authenticates as it is made, so it is made by Run, which retries: an
// etcd that is down when edgecert starts is waited for, never fatal.
func (c *Cluster) connect() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cli != nil {
		return nil
	}
	cli, err := clientv3.New(c.clientCfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	c.cli = cli
	return nil
}

// Close closes the etcd client.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cli == nil {
		return nil
	}
	return c.cli.Close()
}

// Node is this host's name.
func (c *Cluster) Node() string { return c.cfg.Node }

func (c *Cluster) key(parts ...string) string { return c.cfg.Prefix + strings.Join(parts, "/") }

// Reachable says whether this host is in the cluster now, and if not why
// and since when.
func (c *Cluster) Reachable() (ok bool, why string, since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down == "", c.down, c.since
}

// current is the live session, or an error saying etcd is unreachable.
func (c *Cluster) current() (*concurrency.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil {
		return nil, &UnreachableError{Why: c.down, Since: c.since}
	}
	return c.session, nil
}

// UnreachableError is what every cluster operation returns while this host
// has no session: nothing is ordered then.
type UnreachableError struct {
	Why   string
	Since time.Time
}

// Unwrap makes it acme.ErrHeld: an order refused for it is held, not failed.
func (e *UnreachableError) Unwrap() error { return acme.ErrHeld }

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cluster unreachable since %s: %s", e.Since.UTC().Format(time.RFC3339), e.Why)
}

func (c *Cluster) setSession(s *concurrency.Session, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.down == ""
	c.session, c.down = s, why
	if (why == "") != was {
		c.since = time.Now()
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// Changes returns a channel closed at the next change of reachability.
func (c *Cluster) Changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Run keeps this host in the cluster until ctx ends: a session whose lease
// is kept alive, this host's node key and wishes on it, and the watches
// that serve other hosts' tokens and hear of new certificates. When etcd
// is lost, the session is made again (with backoff) once it answers.
func (c *Cluster) Run(ctx context.Context) error {
	const first = 200 * time.Millisecond
	backoff := first
	for {
		joined, err := c.runSession(ctx)
		if ctx.Err() != nil {
			c.setSession(nil, "shutting down")
			return nil
		}
		c.setSession(nil, err.Error())
		if joined {
			backoff = first // a session was lost: try again soon
		}
		wait := backoff
		var se *SecretError
		if errors.As(err, &se) {
			// Not a blip: checked again every 30 s, and said each time.
			c.log.Error("not joining the cluster", "err", err)
			wait = secretRecheck
		} else {
			c.log.Warn("cluster unreachable; serving what this host has, ordering nothing", "err", err)
			backoff = min(2*backoff, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// secretRecheck is how often a host whose secret is not the cluster's
// checks again (a variable for tests).
var secretRecheck = 30 * time.Second

// runSession is one session: it returns when the lease is lost or a watch
// fails.
func (c *Cluster) runSession(ctx context.Context) (joined bool, err error) {
	if err := c.connect(); err != nil {
		return false, err
	}
	if err := c.checkKey(ctx); err != nil {
		return false, err
	}
	if c.oldLease != 0 {
		// The last session's lease, not revoked when it was lost: its keys
		// (this host's name among them) go now, not a TTL from now.
		rctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		_, err := c.cli.Revoke(rctx, c.oldLease)
		cancel()
		if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
			c.oldLease = 0
		}
	}
	gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	lease, err := c.cli.Grant(gctx, int64(c.cfg.TTL/time.Second))
	cancel()
	if err != nil {
		return false, fmt.Errorf("etcd lease: %w", err)
	}
	s, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("etcd session: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, err := c.cli.Revoke(cctx, s.Lease()); err != nil {
			c.oldLease = s.Lease() // revoked at the next session
		}
		s.Orphan()
	}()
	if err := c.claimNode(ctx, s); err != nil {
		return false, err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 2)
	rev, err := c.serveTokens(wctx, s)
	if err != nil {
		return false, err
	}
	go func() { errc <- c.watchTokens(wctx, s, rev) }()
	go func() { errc <- c.watchCerts(wctx) }()
	c.setSession(s, "")
	if err := c.publishWants(ctx); err != nil {
		c.log.Warn("cannot publish this host's certificates", "err", err)
	}
	c.publishKept(ctx)
	c.publishProofs(ctx, s)
	c.log.Info("in the cluster", "lease", fmt.Sprintf("%x", s.Lease()))
	select {
	case <-ctx.Done():
		stop()
		<-errc
		<-errc
		return true, ctx.Err()
	case <-s.Done():
		stop()
		<-errc
		<-errc
		return true, errors.New("etcd lease lost (etcd unreachable, or no quorum)")
	case err := <-errc:
		stop()
		<-errc
		return true, err
	}
}

// claimNode puts nodes/<node> on the session's lease, only if no live host
// holds that name: two hosts with one EDGECERT_NODE would skip each other's
// tokens and overwrite each other's proofs.
func (c *Cluster) claimNode(ctx context.Context, s *concurrency.Session) error {
	k := c.key("nodes", c.cfg.Node)
	opCtx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
	defer cancel()
	resp, err := c.cli.Txn(opCtx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(s.Lease()))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return fmt.Errorf("etcd: join: %w", err)
	}
	if !resp.Succeeded {
		since := ""
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			since = string(kvs[0].Value)
		}
		return fmt.Errorf("another live host is named %q (EDGECERT_NODE), in the cluster since %s: give each host its own name; "+
			"if this host has just restarted, its previous session ends within EDGECERT_CLUSTER_TTL and it joins then", c.cfg.Node, since)
	}
	return nil
}
