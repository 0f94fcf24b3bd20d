package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/docker/client"

	"github.com/edgecert/edgecert/dockerwatch"
)

func TestNewDaemonWiresEveryStage(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EDGECERT_CERTS_DIR", filepath.Join(dir, "certs"))
	t.Setenv("EDGECERT_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("EDGECERT_WEBROOT", filepath.Join(dir, "webroot"))
	t.Setenv("EDGECERT_METRICS_ADDR", "127.0.0.1:0")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	docker, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(dir, "no-engine.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, docker, slog.New(slog.NewTextHandler(io.Discard, nil)), redactorFor(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.StateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v, want 0700", fi, err)
	}
	if d.metrics == nil || d.notes == nil || d.stages.manager == nil || d.stages.batcher == nil || d.watcher == nil {
		t.Fatalf("a stage is missing: %+v", d)
	}
	d.apply(dockerwatch.Desired{Problems: []dockerwatch.Problem{{Container: "c", Label: "edgecert.domains", Err: "bad"}}})
	doc := d.status()
	if doc.Docker.Connected || len(doc.Problems) != 1 || doc.Directory != cfg.ACMEDirectory {
		t.Errorf("status before any engine answered = %+v", doc)
	}
	if err := d.healthy(); err == nil {
		t.Errorf("healthy without an engine")
	}
}
