package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

// proxyDeployer is acme's Deployer: it hands a certificate to signal's
// Batcher. When a proxy's config test fails on a certificate file it cannot
// find, it adds what edgecert knows of that certificate to the error.
type proxyDeployer struct {
	batcher     *signal.Batcher
	has         func(name string) bool // the certificate volume holds name
	labelPrefix string
	certsDir    string
}

func (p proxyDeployer) Deploy(ctx context.Context, d acme.Deployment) error {
	err := p.batcher.Deploy(ctx, toCert(d), d.More)
	if err == nil {
		return nil
	}
	if onlyNoServer(err) {
		return unservedError{err}
	}
	if hints := p.hints(missingFiles(err.Error())); len(hints) > 0 {
		return fmt.Errorf("%w (%s)", err, strings.Join(hints, "; "))
	}
	return err
}

// onlyNoServer says whether every error err joins is a proxy answering
// for the certificate's names with another certificate.
func onlyNoServer(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyNoServer(e) {
				return false
			}
		}
		return len(j.Unwrap()) > 0
	}
	return errors.Is(err, signal.ErrNoServer)
}

// unservedError is acme.ErrUnserved with the proxies' hints for its text.
type unservedError struct{ error }

func (e unservedError) Is(target error) bool { return target == acme.ErrUnserved }

// hints says, for each missing file, why the proxy may not find it.
func (p proxyDeployer) hints(missing []missingFile) []string {
	var out []string
	for _, f := range missing {
		if p.has != nil && p.has(f.Cert) {
			out = append(out, fmt.Sprintf("edgecert has certificate %q in %s, but the proxy finds no %s: mount the certificate volume at %s in the proxy",
				f.Cert, filepath.Join(p.certsDir, f.Cert), f.Path, filepath.Dir(filepath.Dir(f.Path))))
			continue
		}
		out = append(out, fmt.Sprintf("the proxy's config names certificate %q (%s), which no running container asks for: label a container %s.domains=... %s.name=%s, or remove that server block",
			f.Cert, f.Path, p.labelPrefix, p.labelPrefix, f.Cert))
	}
	return out
}

// missingFile is a certificate file a proxy's configuration names but the
// proxy cannot find, read from its config test's output.
type missingFile struct {
	Path string // as the proxy sees it
	Cert string // the certificate name: the directory holding the file
}

// What nginx and Apache say of a certificate file that is not there.
var missingRE = []*regexp.Regexp{
	regexp.MustCompile(`cannot load certificate(?: key)? "([^"]+)": [^\n]*No such file or directory`),
	regexp.MustCompile(`SSLCertificate(?:Key)?File: file '([^']+)' does not exist or is empty`),
}

// certFiles are the names edgecert writes in each certificate directory.
var certFiles = []string{acme.FileFullchain, acme.FileKey, acme.FileCert, acme.FileChain}

// missingFiles returns the edgecert-style certificate files (…/<name>/
// fullchain.pem and the like) that output says are missing, each once.
func missingFiles(output string) []missingFile {
	var out []missingFile
	for _, re := range missingRE {
		for _, m := range re.FindAllStringSubmatch(output, -1) {
			p := m[1]
			if !slices.Contains(certFiles, path.Base(p)) {
				continue
			}
			f := missingFile{Path: p, Cert: path.Base(path.Dir(p))}
			if f.Cert != "." && f.Cert != "/" && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}
