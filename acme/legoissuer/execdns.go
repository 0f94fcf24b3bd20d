package legoissuer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/platform/config/env"
)

// The exec DNS provider, under lego's name and with lego's variables
// (EXEC_PATH, EXEC_MODE, EXEC_PROPAGATION_TIMEOUT, EXEC_POLLING_INTERVAL),
// but run the way an order needs: the program gets PATH and the EXEC_*
// variables and nothing else of edgecert's environment (no cluster secret,
// no other provider's tokens), runs in its own process group, and that
// group is killed when the order's deadline passes, so a hung hook fails
// its order alone and loudly instead of holding an order slot and the
// cluster's lock for ever.

// execKillWait is how long the program's output may stay open after its
// group was killed (a grandchild that escaped the group) before the order
// gives up on it.
const execKillWait = 5 * time.Second

// execProvider runs EXEC_PATH present|cleanup FQDN VALUE (or, with
// EXEC_MODE=RAW, present|cleanup -- DOMAIN TOKEN KEYAUTH).
type execProvider struct {
	program              string
	raw                  bool
	propagation, polling time.Duration
}

func newExecProvider() (challenge.Provider, error) {
	program := env.GetOrFile("EXEC_PATH")
	if program == "" {
		return nil, errors.New("exec: some credentials information are missing: EXEC_PATH")
	}
	return &execProvider{program: program, raw: os.Getenv("EXEC_MODE") == "RAW",
		propagation: env.GetOrDefaultSecond("EXEC_PROPAGATION_TIMEOUT", dns01.DefaultPropagationTimeout),
		polling:     env.GetOrDefaultSecond("EXEC_POLLING_INTERVAL", dns01.DefaultPollingInterval)}, nil
}

func (p *execProvider) Timeout() (time.Duration, time.Duration) { return p.propagation, p.polling }

// Present and CleanUp without a context (lego's interface) have none to
// honour: orders call the context forms through boundProvider.
func (p *execProvider) Present(domain, token, keyAuth string) error {
	return p.PresentContext(context.Background(), domain, token, keyAuth)
}

func (p *execProvider) CleanUp(domain, token, keyAuth string) error {
	return p.CleanUpContext(context.Background(), domain, token, keyAuth)
}

func (p *execProvider) PresentContext(ctx context.Context, domain, token, keyAuth string) error {
	return p.run(ctx, "present", domain, token, keyAuth)
}

func (p *execProvider) CleanUpContext(ctx context.Context, domain, token, keyAuth string) error {
	return p.run(ctx, "cleanup", domain, token, keyAuth)
}

func (p *execProvider) run(ctx context.Context, command, domain, token, keyAuth string) error {
	args := []string{command, "--", domain, token, keyAuth}
	if !p.raw {
		info := dns01.GetChallengeInfo(domain, keyAuth)
		args = []string{command, info.EffectiveFQDN, info.Value}
	}
	cmd := exec.CommandContext(ctx, p.program, args...)
	cmd.Env = execEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execKillWait
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	switch {
	case ctx.Err() != nil && err != nil:
		return fmt.Errorf("exec: %s %s: killed (its process group) at the order's deadline: %w", p.program, command, ctx.Err())
	case err != nil:
		return fmt.Errorf("exec: %s %s: %w%s", p.program, command, err, out.said())
	}
	return nil
}

// execEnv is the program's environment: PATH and the EXEC_* variables.
func execEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" || strings.HasPrefix(k, "EXEC_") {
			out = append(out, kv)
		}
	}
	return out
}

// tailBuffer keeps the last 512 bytes of a program's output, for its error.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 512 {
		t.b = t.b[len(t.b)-512:]
	}
	return len(p), nil
}

func (t *tailBuffer) said() string {
	s := strings.TrimSpace(string(bytes.ToValidUTF8(t.b, nil)))
	if s == "" {
		return ""
	}
	return ": " + strings.ReplaceAll(s, "\n", " | ")
}

// contextProvider is a DNS provider that honours a context (ours).
type contextProvider interface {
	PresentContext(ctx context.Context, domain, token, keyAuth string) error
	CleanUpContext(ctx context.Context, domain, token, keyAuth string) error
}

// cleanupWait bounds a record's removal, which runs after the order's
// deadline too (a record left behind is harmless but untidy).
const cleanupWait = time.Minute

// boundProvider is a DNS provider held to one order's context: a provider
// that takes a context gets it; any other is abandoned (its call goes on
// in the background until lego's own client timeouts end it) when the
// context ends, so that the order fails at its deadline whatever the
// provider does. lego's dns01 reads the propagation timeout from it.
type boundProvider struct {
	ctx context.Context
	p   challenge.Provider
}

func (b boundProvider) Timeout() (time.Duration, time.Duration) {
	if t, ok := b.p.(challenge.ProviderTimeout); ok {
		return t.Timeout()
	}
	return dns01.DefaultPropagationTimeout, dns01.DefaultPollingInterval
}

func (b boundProvider) Present(domain, token, keyAuth string) error {
	if cp, ok := b.p.(contextProvider); ok {
		return cp.PresentContext(b.ctx, domain, token, keyAuth)
	}
	return within(b.ctx, func() error { return b.p.Present(domain, token, keyAuth) })
}

func (b boundProvider) CleanUp(domain, token, keyAuth string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), cleanupWait)
	defer cancel()
	if cp, ok := b.p.(contextProvider); ok {
		return cp.CleanUpContext(ctx, domain, token, keyAuth)
	}
	return within(ctx, func() error { return b.p.CleanUp(domain, token, keyAuth) })
}

// within runs f and returns its error, or gives up on it when ctx ends.
func within(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }() // ends when f does; nobody waits for it after ctx
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the DNS provider did not answer before the order's deadline: %w", ctx.Err())
	}
}
