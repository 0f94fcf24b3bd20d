package cluster

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// ariDoc is the CA's last ARI answer for a certificate, shared so that the
// hosts ask the CA once per Retry-After between them, not once each.
type ariDoc struct {
	Start       time.Time     `json:"start"`
	End         time.Time     `json:"end"`
	RetryAfter  time.Duration `json:"retry_after"`
	Explanation string        `json:"explanation,omitempty"`
	None        bool          `json:"none,omitempty"` // the CA offers no ARI
	Fetched     time.Time     `json:"fetched"`
	By          string        `json:"by"`
}

// ariFresh is how long an answer without a Retry-After is used (the
// Manager's own default poll).
const ariFresh = 12 * time.Hour

// RenewalInfo returns the cluster's fresh ARI answer for leaf, and asks
// the CA (and shares its answer) when there is none.
func (i *Issuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*acme.RenewalInfo, error) {
	c := i.c
	k := c.key("ari", serialHex(leaf))
	if _, err := c.current(); err == nil {
		gctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		resp, err := c.cli.Get(gctx, k)
		cancel()
		var doc ariDoc
		if err == nil && len(resp.Kvs) > 0 && c.verified(k, resp.Kvs[0].Value, &doc) {
			fresh := cmp.Or(doc.RetryAfter, ariFresh)
			if age := time.Since(doc.Fetched); age >= 0 && age < fresh {
				if doc.None {
					return nil, acme.ErrNoARI
				}
				return &acme.RenewalInfo{Start: doc.Start, End: doc.End, RetryAfter: fresh - age, Explanation: doc.Explanation}, nil
			}
		}
	}
	ri, err := i.ca.RenewalInfo(ctx, leaf)
	doc := ariDoc{None: errors.Is(err, acme.ErrNoARI), Fetched: time.Now().UTC(), By: c.cfg.Node}
	switch {
	case err == nil:
		doc.Start, doc.End, doc.RetryAfter, doc.Explanation = ri.Start, ri.End, ri.RetryAfter, ri.Explanation
	case !doc.None:
		return nil, err
	}
	if _, cerr := c.current(); cerr == nil {
		data, _ := c.seal.sign(k, doc)
		pctx, cancel := context.WithTimeout(ctx, c.cfg.TTL)
		_, _ = c.cli.Put(pctx, k, data) // best effort: the next host asks the CA itself
		cancel()
	}
	return ri, err
}
