package acme

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Versions kept on the volume: the last few before the current one stay,
// for `edgecert rollback`; older ones are pruned.

// prune keeps the current version and the keepVersions newest others.
// Failing to prune is harmless and not reported.
func (s *Store) prune(parent, current string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	var old []string
	for _, e := range ents {
		if e.IsDir() && e.Name() != current && !strings.HasPrefix(e.Name(), ".") {
			old = append(old, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(old))) // names start with a UTC timestamp
	for i, n := range old {
		if i >= keepVersions {
			_ = os.RemoveAll(filepath.Join(parent, n))
		}
	}
}

// Versions lists the versions of name kept on the volume besides the
// current one, newest first. A version that cannot be read is skipped.
func (s *Store) Versions(name string) ([]*Info, error) {
	parent := filepath.Join(s.dir, versionsDir, name)
	current, _ := os.Readlink(filepath.Join(s.dir, name))
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	var out []*Info
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || e.Name() == filepath.Base(current) {
			continue
		}
		info, err := readVersion(filepath.Join(parent, e.Name()))
		if err != nil {
			continue
		}
		info.Version = e.Name()
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version }) // names start with a UTC timestamp
	return out, nil
}

// Restore makes an earlier version of name current again, with the same
// one-rename swap as a new pair; the pair is checked first, and given
// combined.pem before the swap when combined is set.
func (s *Store) Restore(name, version string, combined bool) (*Info, error) {
	if version == "" || strings.ContainsAny(version, `/\`) || strings.HasPrefix(version, ".") {
		return nil, fmt.Errorf("certificate %s: no version %q", name, version)
	}
	dir := filepath.Join(s.dir, versionsDir, name, version)
	info, err := readVersion(dir)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: version %s: %w", name, version, err)
	}
	if combined {
		if err := s.combinedIn(dir); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", name, err)
		}
	}
	if err := s.swap(name, version); err != nil {
		return nil, err
	}
	info.Version, info.Written = version, time.Now()
	return info, nil
}
