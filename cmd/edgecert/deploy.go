package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

// acmeDeployer is acme's Deployer, handing certificates to the signal stage.
// When a proxy's config test fails on a certificate file it cannot find, it
// adds what edgecert knows of that certificate to the error.
type acmeDeployer struct {
	d           *signal.Deployer
	labelPrefix string
	certsDir    string
	known       func(name string) bool // a certificate edgecert has; set before the Manager runs
}

func (a *acmeDeployer) Deploy(ctx context.Context, dep acme.Deployment) error {
	err := a.d.Deploy(ctx, signal.Cert{Name: dep.Name, Group: dep.Group, Domains: dep.Domains, Serial: dep.Serial, Fingerprint: dep.Fingerprint})
	if err == nil {
		return nil
	}
	if hints := a.hints(signal.MissingFiles(err.Error())); len(hints) > 0 {
		return fmt.Errorf("%w (%s)", err, strings.Join(hints, "; "))
	}
	return err
}

// hints says, for each missing file, why the proxy may not find it.
func (a *acmeDeployer) hints(missing []signal.MissingFile) []string {
	var out []string
	for _, f := range missing {
		if a.known != nil && a.known(f.Cert) {
			out = append(out, fmt.Sprintf("edgecert has certificate %q in %s, but the proxy finds no %s: mount the certificate volume at %s in the proxy",
				f.Cert, filepath.Join(a.certsDir, f.Cert), f.Path, filepath.Dir(filepath.Dir(f.Path))))
			continue
		}
		out = append(out, fmt.Sprintf("the proxy's config names certificate %q (%s), which no running container asks for: label a container %s.domains=... %s.name=%s, or remove that server block",
			f.Cert, f.Path, a.labelPrefix, a.labelPrefix, f.Cert))
	}
	return out
}
