package cluster

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// take hands over the cluster's certificate doc for o when taking applies
// (takes), and fails with acme.ErrNothingNewer when it does not.
func (i *Issuer) take(id string, doc *certDoc, o acme.Order) (chain, key []byte, err error) {
	if doc == nil {
		return nil, nil, acme.ErrNothingNewer
	}
	if why := takes(doc, o, i.ca.Directory(), time.Now()); why != "" {
		return nil, nil, fmt.Errorf("serial %s by %s: %s: %w", doc.Serial, doc.By, why, acme.ErrNothingNewer)
	}
	key, err = i.c.seal.open(i.c.key("certs", id), doc.Key)
	if err != nil {
		return nil, nil, &acme.OrderError{Err: err, Config: true}
	}
	i.c.log.Info("certificate taken from the cluster, no order", "domains", strings.Join(o.Domains, ","), "serial", doc.Serial, "by", doc.By)
	return []byte(doc.Chain), key, nil
}

// takes is the one rule for taking a certificate from the cluster instead
// of ordering: it must match the wish (names, key type, profile, CA
// directory), be valid now, and be newer than the one this host serves (a
// due or forced renewal never gets its own certificate back); a forced
// order takes only one stored after it was asked for. It says why not, or
// "" when the certificate is to be taken.
func takes(doc *certDoc, o acme.Order, directory string, now time.Time) string {
	switch {
	case !acme.SameNames(doc.Domains, o.Domains) || doc.KeyType != o.KeyType || doc.Profile != o.Profile:
		return "stored for another wish"
	case doc.CA != directory:
		return "from another CA directory"
	}
	leaf, err := leafOf(doc.Chain)
	current := cmp.Or(o.Current, o.Replaces)
	switch {
	case err != nil:
		return "unreadable"
	case now.After(leaf.NotAfter):
		return "expired"
	case o.Rollback && doc.Rollback == nil:
		return "renewed since the rollback"
	case o.Rollback && current != nil && serialHex(leaf) == serialHex(current):
		return "the rolled-back certificate is served here already"
	case o.Rollback:
		return "" // older, as a rollback is
	case current != nil && (serialHex(leaf) == serialHex(current) || !leaf.NotAfter.After(current.NotAfter)):
		return "not newer than the one this host serves"
	case o.Forced && !doc.At.After(o.Asked):
		return "stored before the forced renewal was asked for"
	}
	return ""
}
