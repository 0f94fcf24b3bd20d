package main

import (
	"context"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

// acmeDeployer is acme's Deployer, handing certificates to the signal stage.
type acmeDeployer struct{ d *signal.Deployer }

func (a acmeDeployer) Deploy(ctx context.Context, dep acme.Deployment) error {
	return a.d.Deploy(ctx, signal.Cert{Name: dep.Name, Group: dep.Group, Domains: dep.Domains, Serial: dep.Serial, Fingerprint: dep.Fingerprint})
}
