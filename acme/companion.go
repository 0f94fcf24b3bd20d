package acme

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Importing what acme-companion left on its certificate volume, so that a
// move to edgecert orders nothing that is still valid. acme-companion keeps
// one real directory per certificate, named after its first domain (with
// "_test_" before it for Let's Encrypt staging), holding cert.pem, chain.pem,
// fullchain.pem and key.pem, and a .companion marker.

// ImportResult is what ImportCompanion did with one directory.
type ImportResult struct {
	Name   string // the certificate name (the directory's)
	Serial string // imported: the certificate's serial
	Skip   string // not imported: why
}

// ImportCompanion makes each valid certificate of an acme-companion
// volume at dir the current version of the certificate of the same name,
// unless the store already has that name. staging: import the "_test_"
// directories (acme-companion's staging certificates) instead of the
// others. It runs before the Manager starts: the Manager then finds the
// certificates on the volume with their state, and renews them on their
// own schedule.
func ImportCompanion(dir string, staging bool, store *Store, stateDir string, now time.Time, log *slog.Logger) ([]ImportResult, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("acme-companion volume %s: %w", dir, err)
	}
	var out []ImportResult
	for _, ent := range ents {
		full := filepath.Join(dir, ent.Name())
		if fi, err := os.Stat(full); err != nil || !fi.IsDir() || strings.HasPrefix(ent.Name(), ".") {
			continue // the flat <domain>.crt links, dhparam.pem, default.crt, ...
		}
		name, test := strings.CutPrefix(ent.Name(), "_test_")
		if test != staging {
			continue
		}
		r := importOne(full, name, store, stateDir, now)
		switch {
		case r.Skip == skipHave:
			// Imported at an earlier start (or edgecert's own): every
			// restart with the variable still set comes here; no warning.
			log.Debug("acme-companion certificate not imported: edgecert has one of this name", "cert", name)
		case r.Skip != "":
			log.Warn("acme-companion certificate not imported", "cert", name, "dir", full, "err", r.Skip)
		default:
			log.Info("acme-companion certificate imported; no order", "cert", name, "serial", r.Serial)
		}
		out = append(out, r)
	}
	return out, nil
}

// skipHave is why a directory whose name edgecert already has is not
// imported.
const skipHave = "edgecert already has a certificate of this name; it is kept"

func importOne(dir, name string, store *Store, stateDir string, now time.Time) ImportResult {
	r := ImportResult{Name: name}
	if err := ValidateName(name); err != nil {
		r.Skip = err.Error()
		return r
	}
	if store.Has(name) {
		r.Skip = skipHave
		return r
	}
	chain, err := os.ReadFile(filepath.Join(dir, "fullchain.pem"))
	if err != nil {
		r.Skip = err.Error()
		return r
	}
	key, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		key, err = os.ReadFile(filepath.Join(dir, FileKey))
	}
	if err != nil {
		r.Skip = err.Error()
		return r
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		r.Skip = "the key does not fit the certificate: " + err.Error()
		return r
	}
	leaf, _, err := parseChain(chain)
	if err != nil {
		r.Skip = err.Error()
		return r
	}
	if !now.Before(leaf.NotAfter) {
		r.Skip = "expired at " + leaf.NotAfter.UTC().Format(time.RFC3339) + "; edgecert orders a new one when a container asks for it"
		return r
	}
	if _, err := store.Write(name, chain, key, false); err != nil {
		r.Skip = err.Error()
		return r
	}
	info, err := store.Read(name)
	if err != nil {
		r.Skip = err.Error()
		return r
	}
	st := persisted{Fingerprint: info.Fingerprint, Domains: info.Domains, Imported: "acme-companion"}
	st.appendEvent(Event{At: now, Kind: EventImported, Serial: info.Serial, Detail: "from acme-companion's " + dir})
	if err := saveState(stateDir, name, st); err != nil {
		r.Skip = "written, but its state was not saved: " + err.Error()
		return r
	}
	r.Serial = info.Serial
	return r
}
