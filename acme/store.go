package acme

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/edgecert/edgecert/acme/atomicfile"
)

// Layout of the certificate volume:
//
//	<dir>/<name>                      -> .versions/<name>/<version>   (relative symlink)
//	<dir>/.versions/<name>/<version>/fullchain.pem  leaf + intermediates
//	                                 /cert.pem       leaf
//	                                 /chain.pem      intermediates
//	                                 /privkey.pem    key, 0600
//
// A new pair is written to a fresh version directory, synced, and made
// current by renaming one symlink, so a reader sees the old pair or the new
// one, never half of each. The link is relative, so the volume works wherever
// nginx mounts it.
const (
	versionsDir      = ".versions"
	placeholderOrg   = "edgecert placeholder"
	keepVersions     = 3
	placeholderValid = 90 * 24 * time.Hour
)

// File names inside a certificate directory.
const (
	FileFullchain = "fullchain.pem"
	FileCert      = "cert.pem"
	FileChain     = "chain.pem"
	FileKey       = "privkey.pem"
	// FileCombined is certificate, chain and key in one file (HAProxy's
	// crt), written when a proxy asks for it by label; 0600 like the key.
	FileCombined = "combined.pem"
)

// Store is the certificate volume. Its methods are not safe for concurrent
// use on the same name; the Manager serialises them per certificate.
type Store struct {
	dir     string
	keyMode fs.FileMode
	keyUID  int // -1: the key is owned by whoever edgecert runs as
	keyGID  int
}

// KeyOwner is who owns the private keys (still mode 0600): for proxies whose
// master process is not root. UID -1 leaves them to whoever edgecert runs as.
type KeyOwner struct{ UID, GID int }

// DefaultOwner leaves keys to whoever edgecert runs as.
var DefaultOwner = KeyOwner{UID: -1, GID: -1}

// NewStore returns a store rooted at dir, creating it if needed, whose keys
// belong to owner.
func NewStore(dir string, owner KeyOwner) (*Store, error) {
	if err := mkdirSynced(filepath.Join(dir, versionsDir)); err != nil {
		return nil, fmt.Errorf("certificate volume: %w", err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, versionsDir)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("certificate volume: %s is not a directory (a link?): refusing to write through it", filepath.Join(dir, versionsDir))
	}
	return &Store{dir: dir, keyMode: 0o600, keyUID: owner.UID, keyGID: owner.GID}, nil
}

// FixKeyOwners gives every key on the volume the store's key owner, so that
// setting one mends certificates written before. It returns how many keys
// it changed.
func (s *Store) FixKeyOwners() (int, error) {
	if s.keyUID < 0 {
		return 0, nil
	}
	keys, err := filepath.Glob(filepath.Join(s.dir, versionsDir, "*", "*", FileKey))
	if err != nil {
		return 0, err
	}
	changed := 0
	for _, k := range keys {
		fi, err := os.Lstat(k)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == s.keyUID && int(st.Gid) == s.keyGID {
			continue
		}
		if err := os.Lchown(k, s.keyUID, s.keyGID); err != nil {
			return changed, fmt.Errorf("key owner: %w", err)
		}
		changed++
	}
	return changed, nil
}

// Info describes the certificate currently on the volume for one name.
type Info struct {
	Serial      string
	Domains     []string
	NotBefore   time.Time
	NotAfter    time.Time
	Issuer      string
	Placeholder bool
	Fingerprint string // SHA-256 of the leaf, hex
	KeyType     string // ec256, ec384, rsa2048, ... ("" if other)
	Version     string
	Written     time.Time // when this version was made current (the link's time)
	Leaf        *x509.Certificate
}

// Read returns what is current for name, or an error wrapping fs.ErrNotExist.
// The pair must be readable and the key must fit the certificate.
func (s *Store) Read(name string) (*Info, error) {
	link := filepath.Join(s.dir, name)
	target, err := os.Readlink(link)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	info, err := readVersion(link)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	info.Version = filepath.Base(target)
	if fi, err := os.Lstat(link); err == nil {
		info.Written = fi.ModTime()
	}
	return info, nil
}

// Pair returns the current chain and private key (PEM) of name.
// Both come from the one version the link points to, even across a swap.
func (s *Store) Pair(name string) (chain, key []byte, err error) {
	target, err := os.Readlink(filepath.Join(s.dir, name))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	dir := filepath.Join(s.dir, target) // links are relative to the volume
	if chain, err = os.ReadFile(filepath.Join(dir, FileFullchain)); err != nil {
		return nil, nil, err
	}
	if key, err = os.ReadFile(filepath.Join(dir, FileKey)); err != nil {
		return nil, nil, err
	}
	return chain, key, nil
}

// Key returns the current private key (PEM) of name.
func (s *Store) Key(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, name, FileKey))
}

// Has says whether the volume holds a certificate called name (its link
// exists).
func (s *Store) Has(name string) bool {
	fi, err := os.Lstat(filepath.Join(s.dir, name))
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}

// Names lists the certificate names that have a current link on the volume.
func (s *Store) Names() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("certificate volume: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink != 0 && !strings.HasPrefix(e.Name(), ".") && !isFlatLink(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// flatLinks are nginx-proxy's per-domain links: suffix -> the file linked.
var flatLinks = map[string]string{".crt": FileFullchain, ".key": FileKey, ".chain.pem": FileChain}

func isFlatLink(n string) bool {
	for suffix := range flatLinks {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}$`)

// ValidateName checks a certificate name. The name becomes a directory and a
// link on the volume, so it must be a plain file name that is not one of
// nginx-proxy's flat links.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("certificate name %q must be 1-100 lowercase letters, digits, '.', '_' or '-', start with a letter or digit, and not contain '..'", name)
	}
	if isFlatLink(name) {
		return fmt.Errorf("certificate name %q must not end in .crt, .key or .chain.pem (reserved for nginx-proxy's flat links)", name)
	}
	return nil
}

// Write makes fullchain (PEM, leaf first) and key the current pair for name,
// with combined.pem beside them when combined is set. It refuses a key that
// does not match the leaf.
func (s *Store) Write(name string, fullchain, key []byte, combined bool) (*Info, error) {
	if _, err := tls.X509KeyPair(fullchain, key); err != nil {
		return nil, fmt.Errorf("certificate %s: refusing to write a mismatched or unreadable pair: %w", name, err)
	}
	leaf, chain, err := parseChain(fullchain)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	info := infoOf(leaf)
	kind := info.Serial
	if len(kind) > 12 {
		kind = kind[:12]
	}
	if info.Placeholder {
		kind = "placeholder"
	}
	version := time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + kind
	files := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{FileFullchain, fullchain, 0o644},
		{FileCert, pemCerts(leaf), 0o644},
		{FileChain, pemCerts(chain...), 0o644},
		{FileKey, key, s.keyMode},
	}
	if combined {
		files = append(files, struct {
			name string
			data []byte
			mode fs.FileMode
		}{FileCombined, combinedPEM(fullchain, key), s.keyMode})
	}

	parent := filepath.Join(s.dir, versionsDir, name)
	if err := mkdirSynced(parent); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	if fi, err := os.Lstat(parent); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("certificate %s: %s is a link, not a directory of edgecert's: refusing to write through it (nothing was changed)", name, parent)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-")
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	for _, f := range files {
		uid, gid := -1, -1
		if f.name == FileKey || f.name == FileCombined {
			uid, gid = s.keyUID, s.keyGID
		}
		if err := atomicfile.Create(filepath.Join(tmp, f.name), f.data, f.mode, uid, gid); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", name, err)
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	final := filepath.Join(parent, version)
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}

	if err := s.swap(name, version); err != nil {
		return nil, err
	}
	info.Version, info.Written = version, time.Now()
	s.prune(parent, version)
	return info, nil
}

// swap makes version current for name by renaming one relative link over
// the one nginx's paths go through.
func (s *Store) swap(name, version string) error {
	rel := filepath.Join(versionsDir, name, version)
	tmpLink := filepath.Join(s.dir, "."+name+".link-tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(rel, tmpLink); err != nil {
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	link := filepath.Join(s.dir, name)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		_ = os.Remove(tmpLink)
		return fmt.Errorf("certificate %s: %s exists and is not a link made by edgecert; move it away (nothing was changed)", name, link)
	}
	if err := os.Rename(tmpLink, link); err != nil {
		_ = os.Remove(tmpLink)
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	return nil
}

// WriteFlatLinks makes nginx-proxy's flat layout for name: for each domain,
// <domain>.crt, <domain>.key and <domain>.chain.pem, relative links through
// the <name> link (so they follow every new version). Existing links that
// point elsewhere are replaced; regular files are left alone.
func (s *Store) WriteFlatLinks(name string, domains []string) error {
	for _, d := range domains {
		if strings.HasPrefix(d, "*.") {
			continue // nginx-proxy looks a wildcard's certificate up by the name under it
		}
		for suffix, file := range flatLinks {
			link := filepath.Join(s.dir, d+suffix)
			target := filepath.Join(name, file)
			if cur, err := os.Readlink(link); err == nil && cur == target {
				continue
			}
			if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
				return fmt.Errorf("flat link %s: a file that is not a link is in the way; move it away", link)
			}
			tmp := filepath.Join(s.dir, "."+d+suffix+".link-tmp")
			_ = os.Remove(tmp)
			if err := os.Symlink(target, tmp); err != nil {
				return fmt.Errorf("flat link %s: %w", link, err)
			}
			if err := os.Rename(tmp, link); err != nil {
				_ = os.Remove(tmp)
				return fmt.Errorf("flat link %s: %w", link, err)
			}
		}
	}
	return atomicfile.SyncDir(s.dir)
}

// WritePlaceholder writes a self-signed pair for domains so that a proxy
// configured for name can start before the real certificate arrives.
func (s *Store) WritePlaceholder(name string, domains []string, combined bool) (*Info, error) {
	chain, key, err := selfSigned(domains)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: placeholder: %w", name, err)
	}
	return s.Write(name, chain, key, combined)
}

// EnsureCombined adds combined.pem to name's current version if it lacks
// one (a proxy asked for it after the version was written). The version's
// pair never changes, so the file matches it; it appears in one rename.
func (s *Store) EnsureCombined(name string) error {
	target, err := filepath.EvalSymlinks(filepath.Join(s.dir, name))
	if err != nil {
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	if err := s.combinedIn(target); err != nil {
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	return nil
}

// combinedIn adds combined.pem to a version directory that lacks one, from
// the pair it holds, in one rename.
func (s *Store) combinedIn(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, FileCombined)); err == nil {
		return nil
	}
	chain, err := os.ReadFile(filepath.Join(dir, FileFullchain))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(dir, FileKey))
	if err != nil {
		return err
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return fmt.Errorf("the pair does not fit: %w", err)
	}
	tmp := filepath.Join(dir, "."+FileCombined+".tmp")
	_ = os.Remove(tmp)
	if err := atomicfile.Create(tmp, combinedPEM(chain, key), s.keyMode, s.keyUID, s.keyGID); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, FileCombined)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(dir)
}

// combinedPEM is the certificate, its chain and the key, in that order.
func combinedPEM(fullchain, key []byte) []byte {
	out := append([]byte(nil), fullchain...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, key...)
}

// mkdirSynced makes dir (and its parents) and fsyncs each new one's parent,
// so that a power loss cannot leave a link to a directory that is gone.
func mkdirSynced(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return atomicfile.SyncDir(parent)
}

// readVersion reads one version directory: its chain, and its key, which
// must fit the leaf.
func readVersion(dir string) (*Info, error) {
	chain, err := os.ReadFile(filepath.Join(dir, FileFullchain))
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(filepath.Join(dir, FileKey))
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return nil, fmt.Errorf("%s: the pair is unreadable or the key does not fit: %w", dir, err)
	}
	leaf, _, err := parseChain(chain)
	if err != nil {
		return nil, err
	}
	return infoOf(leaf), nil
}

// CheckWritable says whether a new pair for name can be written now: the
// name is free or an edgecert link, its version directory can be made, and
// a file the size of a pair can be written and synced there. Run before an
// order, so that an order is not placed only to find the volume full,
// read-only, or with a directory in the way.
func (s *Store) CheckWritable(name string) error {
	link := filepath.Join(s.dir, name)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a link made by edgecert (a directory or file left by another tool?): move it away", link)
	}
	parent := filepath.Join(s.dir, versionsDir, name)
	if err := mkdirSynced(parent); err != nil {
		return err
	}
	if fi, err := os.Lstat(parent); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is a link, not a directory of edgecert's: refusing to write through it", parent)
	}
	f, err := os.CreateTemp(parent, ".tmp-check-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 16<<10)) // a chain, a key and their copies
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
