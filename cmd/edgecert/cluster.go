package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/cluster"
	"github.com/edgecert/edgecert/dockerwatch"
)

// Cluster mode wiring: the cluster wraps the issuer (one order per
// certificate cluster-wide), shares HTTP-01 tokens, holds orders while etcd
// is unreachable, and records each host's proofs.

// ClusterView is the cluster part of `edgecert status --json`.
type ClusterView struct {
	Node      string    `json:"node"`
	Reachable bool      `json:"reachable"`
	Error     string    `json:"error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
}

// newCluster connects this host to the cluster from cfg.
func newCluster(cfg Config, check cluster.TokenChecker, onCert func(cluster.StoredCert), red *redactor, log *slog.Logger) (*cluster.Cluster, error) {
	var tc *tls.Config
	if cfg.EtcdCA != "" || cfg.EtcdCert != "" || etcdTLS(cfg.EtcdEndpoints[0]) {
		var err error
		if tc, err = cluster.TLSConfig(cfg.EtcdCA, cfg.EtcdCert, cfg.EtcdKey); err != nil {
			return nil, err
		}
	}
	return cluster.New(cluster.Config{Endpoints: cfg.EtcdEndpoints, TLS: tc, Username: cfg.EtcdUser, Password: cfg.EtcdPassword,
		Prefix: cfg.EtcdPrefix, Node: cfg.Node, Secret: []byte(cfg.ClusterSecret), PreviousSecret: []byte(cfg.PreviousSecret), Directory: cfg.ACMEDirectory, TTL: cfg.ClusterTTL, AckWait: cfg.ClusterAckWait,
		Webroot: cfg.Webroot, Check: check, OnCert: onCert, Redact: red.String, Log: log})
}

// holds combines the reasons orders wait for (no proxy running, the
// cluster unreachable) into the Manager's one hold.
type holds struct {
	mu      sync.Mutex
	reasons map[string]string
	manager *acme.Manager
}

func (h *holds) set(source, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reasons == nil {
		h.reasons = map[string]string{}
	}
	h.reasons[source] = reason
	var all []string
	for _, s := range []string{"proxies", "cluster"} {
		if r := h.reasons[s]; r != "" {
			all = append(all, r)
		}
	}
	h.manager.Hold(strings.Join(all, "; "))
}

// wishes are this host's wanted certificates as the cluster shares them,
// their key types and profiles resolved as the Manager resolves them (the
// cluster identifies a certificate by names, key type, profile and CA).
func wishes(certs []dockerwatch.CertSpec, defaultKeyType, defaultProfile string) []cluster.Wish {
	out := make([]cluster.Wish, 0, len(certs))
	for _, c := range certs {
		out = append(out, cluster.Wish{Name: c.Name, Domains: c.Domains, KeyType: cmp.Or(c.KeyType, defaultKeyType),
			Profile: cmp.Or(c.Profile, defaultProfile)})
	}
	return out
}

// clusterCert hears of a certificate another host stored: the Manager
// takes it (through the cluster's issuer, without an order) when it is newer
// than the volume's.
func (d *daemon) clusterCert(sc cluster.StoredCert) {
	d.stages.manager.Refresh(acme.Offered{Name: sc.Name, Serial: sc.Serial, NotAfter: sc.NotAfter, By: sc.By, At: sc.At, Rollback: sc.Rollback})
}

// runCluster keeps this host in the cluster, and follows its
// reachability: orders wait while it is lost, and the log says so at each
// change.
func (d *daemon) runCluster(ctx context.Context) error {
	cl := d.cluster
	defer cl.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cl.Run(ctx) })
	g.Go(func() error {
		// A notice once etcd has been unreachable for two leases (not for
		// a blip, nor at start before the first connection), and one when
		// it is back.
		var notify <-chan time.Time
		told := false
		for {
			changed := cl.Changes()
			ok, why, _ := cl.Reachable()
			if ok {
				d.holds.set("cluster", "")
				notify = nil
				if told {
					d.notes.ClusterState(true, "")
					told = false
				}
			} else {
				d.holds.set("cluster", "cluster unreachable: "+why)
				if notify == nil && !told {
					notify = time.After(2 * d.cfg.ClusterTTL)
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			case <-notify:
				notify = nil
				if ok, why, _ := cl.Reachable(); !ok {
					d.log.Error("cluster unreachable: serving what this host has, ordering nothing", "err", why)
					d.notes.ClusterState(false, why)
					told = true
				}
			}
		}
	})
	return g.Wait()
}

// clusterDeployer records this host's proof in the cluster after the
// proxies' own.
type clusterDeployer struct {
	acme.Deployer
	cluster *cluster.Cluster
	log     *slog.Logger
}

func (c clusterDeployer) Deploy(ctx context.Context, d acme.Deployment) error {
	if err := c.Deployer.Deploy(ctx, d); err != nil {
		return err
	}
	if err := c.cluster.Proven(ctx, d.Name, d.Serial); err != nil {
		c.log.Warn("proven here, but the cluster could not be told", "cert", d.Name, "err", err)
	}
	return nil
}
