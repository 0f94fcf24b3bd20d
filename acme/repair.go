package acme

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// What is done for a volume that something went wrong with: leftovers of an
// interrupted write, a current version that cannot be read.

// Clean removes what an interrupted write leaves: temporary version
// directories (which may hold an issued key) and temporary links. It returns
// how many it removed. Call it before any write.
func (s *Store) Clean() (int, error) {
	var stale []string
	tmps, err := filepath.Glob(filepath.Join(s.dir, versionsDir, "*", ".tmp-*"))
	if err != nil {
		return 0, err
	}
	stale = append(stale, tmps...)
	links, err := filepath.Glob(filepath.Join(s.dir, ".*.link-tmp"))
	if err != nil {
		return 0, err
	}
	stale = append(stale, links...)
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return 0, fmt.Errorf("certificate volume: %w", err)
		}
	}
	return len(stale), nil
}

// Recover makes the newest usable version of name current again when the
// current one cannot be read (a truncated file, a bad block, a link to a
// directory that is gone): its chain must parse, its key must fit and it
// must not have expired. It returns what is current now, or an error
// wrapping fs.ErrNotExist when no version is usable.
func (s *Store) Recover(name string) (*Info, error) {
	parent := filepath.Join(s.dir, versionsDir, name)
	if fi, err := os.Lstat(parent); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("certificate %s: no earlier version: %w", name, fs.ErrNotExist)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	var versions []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			versions = append(versions, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(versions))) // names start with a UTC timestamp
	for _, v := range versions {
		info, err := readVersion(filepath.Join(parent, v))
		if err != nil || time.Now().After(info.NotAfter) {
			continue
		}
		if err := s.swap(name, v); err != nil {
			return nil, err
		}
		info.Version = v
		return info, nil
	}
	return nil, fmt.Errorf("certificate %s: no usable version left on the volume: %w", name, fs.ErrNotExist)
}
