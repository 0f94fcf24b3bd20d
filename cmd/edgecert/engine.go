package main

import (
	"context"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
)

// engineTimeout bounds asking the engine what it is at start.
const engineTimeout = 10 * time.Second

// versioner is the one call edgecert makes to tell the engines apart.
type versioner interface {
	ServerVersion(ctx context.Context) (types.Version, error)
}

// engine is what the engine behind EDGECERT's socket says it is.
type engine struct {
	Name, Version string
	Podman        bool // Podman's Docker-compatible API (dockerwatch/podman.go, signal/podman.go)
}

// detectEngine asks the engine's version document: Podman's names a
// "Podman Engine" component. An engine that does not answer is taken for
// Docker (err says why); the watcher reconnects to it as to any.
func detectEngine(ctx context.Context, api versioner) (engine, error) {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	v, err := api.ServerVersion(ctx)
	if err != nil {
		return engine{Name: "docker"}, err
	}
	for _, c := range v.Components {
		if strings.HasPrefix(c.Name, "Podman") {
			return engine{Name: "podman", Version: c.Version, Podman: true}, nil
		}
	}
	return engine{Name: "docker", Version: v.Version}, nil
}
