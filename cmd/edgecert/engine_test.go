package main

import (
	"context"
	"errors"
	"testing"

	"github.com/docker/docker/api/types"
)

type fakeVersion struct {
	v   types.Version
	err error
}

func (f fakeVersion) ServerVersion(context.Context) (types.Version, error) { return f.v, f.err }

func TestDetectEngine(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		api    fakeVersion
		podman bool
		name   string
	}{
		{desc: "Docker", api: fakeVersion{v: types.Version{Version: "28.2.2", Components: []types.ComponentVersion{{Name: "Engine", Version: "28.2.2"}, {Name: "containerd"}}}}, name: "docker"},
		{desc: "Podman 4.3", api: fakeVersion{v: types.Version{Version: "4.3.1", Components: []types.ComponentVersion{{Name: "Podman Engine", Version: "4.3.1"}, {Name: "Conmon"}}}}, podman: true, name: "podman"},
		{desc: "no answer: taken for Docker", api: fakeVersion{err: errors.New("connection refused")}, name: "docker"},
	} {
		e, _ := detectEngine(context.Background(), tc.api)
		if e.Podman != tc.podman || e.Name != tc.name {
			t.Errorf("%s: %+v; want podman %v, name %s", tc.desc, e, tc.podman, tc.name)
		}
	}
}
