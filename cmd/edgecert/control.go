package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/cluster"
	"github.com/edgecert/edgecert/acme/legoissuer"
	"github.com/edgecert/edgecert/dockerwatch"
	"github.com/edgecert/edgecert/signal"
)

// The control socket: HTTP+JSON over a unix socket inside the container,
// used by `edgecert status|renew|health` through docker exec.

// StatusDoc is the documented schema of `edgecert status --json`.
type StatusDoc struct {
	Version      string                `json:"version"`
	Directory    string                `json:"directory"`
	Docker       dockerwatch.Health    `json:"docker"`
	Certificates []CertView            `json:"certificates"`
	Proxies      []ProxyView           `json:"proxies"`
	Problems     []dockerwatch.Problem `json:"problems"`
	Cluster      *ClusterView          `json:"cluster,omitempty"` // cluster mode only
}

// ProxyView is one labelled proxy: its group ("" serves every
// certificate), whether it runs, its last reload (the handshakes of a batch
// as one step) and the end of its rest after a slow reload.
type ProxyView struct {
	Name       string         `json:"name"`
	Group      string         `json:"group,omitempty"`
	Running    bool           `json:"running"`
	LastReload *signal.Report `json:"last_reload,omitempty"`
	RestUntil  time.Time      `json:"rest_until,omitzero"`
}

// CertView is one certificate with the last reload reports of its proxies.
type CertView struct {
	acme.CertStatus
	Reloads []signal.Report `json:"reloads"`
	// Hosts: in cluster mode, each host's proof of this certificate.
	Hosts []cluster.Proof `json:"hosts,omitempty"`
}

type renewRequest struct {
	Names  []string `json:"names"`
	Force  bool     `json:"force"`
	DryRun bool     `json:"dry_run"`
}

type renewResponse struct {
	Results []acme.RenewResult `json:"results"`
}

// daemonState is what the control server reads from the running daemon.
type daemonState interface {
	status() StatusDoc
	healthy() error
	renew(ctx context.Context, name string, force, dryRun bool) acme.RenewResult
	forget(ctx context.Context, name string) acme.RenewResult
	rollback(ctx context.Context, name, serial string) acme.RenewResult
	dnsRecords(ctx context.Context, key string) (dnsRecordAnswer, error)
}

// dnsRecordAnswer is what `edgecert dns-record` shows: the DNS-PERSIST-01
// records of a certificate (Name, when one is wanted) or of domains.
type dnsRecordAnswer struct {
	Name    string                     `json:"name,omitempty"`
	Domains []string                   `json:"domains"`
	Email   string                     `json:"-"`
	Records []legoissuer.PersistRecord `json:"records"`
}

type rollbackRequest struct {
	Name   string `json:"name"`
	Serial string `json:"serial,omitempty"` // "": the version before the current one
}

// Every answer goes through red: status carries errors from outside (the
// CA, DNS providers, the engine) that may hold a secret.
func serveControl(ctx context.Context, path string, d daemonState, red *redactor) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	// The socket's lock decides who owns the socket file: its holder removes
	// one left by an earlier run and makes its own; anyone else leaves it
	// alone, whether it answers yet or not (lock.go).
	lock, err := flockFile(path+".lock", errSocketHeld)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	defer lock.Close()
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, red, d.status())
	})
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		if err := d.healthy(); err != nil {
			writeJSON(w, red, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, red, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /v1/renew", func(w http.ResponseWriter, r *http.Request) {
		var req renewRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || len(req.Names) == 0 {
			writeJSON(w, red, http.StatusBadRequest, map[string]string{"error": "want {\"names\": [...], \"force\": bool}"})
			return
		}
		res := renewResponse{Results: make([]acme.RenewResult, len(req.Names))}
		done := make(chan struct{}, len(req.Names))
		for i, n := range req.Names {
			go func() {
				res.Results[i] = d.renew(r.Context(), n, req.Force, req.DryRun)
				done <- struct{}{}
			}()
		}
		for range req.Names {
			<-done
		}
		writeJSON(w, red, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/forget", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.Name == "" {
			writeJSON(w, red, http.StatusBadRequest, map[string]string{"error": "want {\"name\": ...}"})
			return
		}
		writeJSON(w, red, http.StatusOK, d.forget(r.Context(), req.Name))
	})
	mux.HandleFunc("GET /v1/dns-record", func(w http.ResponseWriter, r *http.Request) {
		ans, err := d.dnsRecords(r.Context(), r.URL.Query().Get("name"))
		if err != nil {
			writeJSON(w, red, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, red, http.StatusOK, ans)
	})
	mux.HandleFunc("POST /v1/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req rollbackRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.Name == "" {
			writeJSON(w, red, http.StatusBadRequest, map[string]string{"error": "want {\"name\": ..., \"serial\": ...}"})
			return
		}
		writeJSON(w, red, http.StatusOK, d.rollback(r.Context(), req.Name, req.Serial))
	})
	return serveUntil(ctx, ln, mux, "control socket")
}

// serveUntil serves h on ln until ctx ends, then shuts down gracefully.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, what string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", what, err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		<-errc
		return nil
	}
}

func writeJSON(w http.ResponseWriter, red *redactor, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	_, _ = io.WriteString(w, red.String(b.String()))
}

// writeStatus writes doc as writeJSON would, byte for byte, but one
// certificate at a time: the status of a thousand certificates is never one
// JSON document (and its redacted copy) in memory.
func writeStatus(w http.ResponseWriter, red *redactor, doc StatusDoc) {
	certs := doc.Certificates
	doc.Certificates = []CertView{}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
	frame := b.String()
	const empty = `"certificates": [],`
	i := strings.Index(frame, empty)
	if len(certs) == 0 || i < 0 {
		doc.Certificates = certs
		writeJSON(w, red, http.StatusOK, doc)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, red.String(frame[:i+len(`"certificates": [`)]))
	for n, c := range certs {
		b.Reset()
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		enc := json.NewEncoder(&b)
		enc.SetIndent("    ", "  ")
		_ = enc.Encode(c)
		b.Truncate(b.Len() - 1) // the encoder's newline
		_, _ = io.WriteString(w, red.String(b.String()))
	}
	_, _ = io.WriteString(w, red.String("\n  ],"+frame[i+len(empty):]))
}
