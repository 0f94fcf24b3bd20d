package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// runHook runs the deploy hook for a certificate that is now served, with its
// names and paths in the environment, as certbot's deploy hooks get them.
// The hook gets PATH and the documented EDGECERT_* variables, nothing else
// of edgecert's environment (which holds the SMTP password and the EAB key).
// It runs in a process group of its own, killed with all its children after
// hookTimeout; children that keep its output open are cut off after
// hookWaitDelay.
func (n *notifier) runHook(ctx context.Context, s acme.CertStatus) {
	ctx, cancel := context.WithTimeout(ctx, n.hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.cfg.Hook[0], n.cfg.Hook[1:]...)
	cmd.Env = hookEnv(n.cfg.CertsDir, s)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = n.hookWaitDelay
	out := &headBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %s: %w", n.hookTimeout, err)
	}
	if err != nil {
		n.log.Error("deploy hook failed", "cert", s.Name, "err", err, "output", cut(oneLine(out.String()), 500))
		return
	}
	n.log.Info("deploy hook ran", "cert", s.Name, "took_ms", time.Since(start).Milliseconds())
}

// headBuffer keeps the first max bytes written to it and drops the rest:
// a hook's output goes to the log, never into memory without a bound.
type headBuffer struct {
	max int
	b   []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) String() string { return string(h.b) }

// hookEnv is the deploy hook's whole environment.
func hookEnv(certsDir string, s acme.CertStatus) []string {
	dir := filepath.Join(certsDir, s.Name)
	return []string{
		"PATH=" + cmp.Or(os.Getenv("PATH"), "/usr/local/bin:/usr/bin:/bin"),
		"EDGECERT_CERT_NAME=" + s.Name,
		"EDGECERT_DOMAINS=" + strings.Join(s.Domains, ","),
		"EDGECERT_SERIAL=" + s.Serial,
		"EDGECERT_NOT_AFTER=" + s.NotAfter.UTC().Format(time.RFC3339),
		"EDGECERT_CERT_DIR=" + dir,
		"EDGECERT_FULLCHAIN=" + filepath.Join(dir, acme.FileFullchain),
		"EDGECERT_PRIVKEY=" + filepath.Join(dir, acme.FileKey),
		"EDGECERT_CERT=" + filepath.Join(dir, acme.FileCert),
		"EDGECERT_CHAIN=" + filepath.Join(dir, acme.FileChain),
		// certbot's --deploy-hook names, so that its hooks run unchanged.
		"RENEWED_LINEAGE=" + dir,
		"RENEWED_DOMAINS=" + strings.Join(s.Domains, " "),
	}
}
