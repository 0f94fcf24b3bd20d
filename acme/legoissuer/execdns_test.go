package legoissuer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A hung exec program is killed with its process group at the order's
// deadline, and it saw PATH and the EXEC_* variables only.
func TestExecProviderBoundedAndBare(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	body := `#!/bin/sh
env > "$EXEC_OUT/env"
sleep 300 &
echo $! > "$EXEC_OUT/child"
wait
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EXEC_PATH", script)
	t.Setenv("EXEC_OUT", dir)
	t.Setenv("EDGECERT_CLUSTER_SECRET", "the-cluster-secret")
	t.Setenv("CF_DNS_API_TOKEN", "another-providers-token")
	p, err := newExecProvider()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err = boundProvider{ctx: ctx, p: p}.Present("a.example.com", "tok", "tok.thumb")
	took := time.Since(start)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Present of a hung program: %v", err)
	}
	if took > 15*time.Second {
		t.Errorf("Present returned %s after its 1 s deadline", took)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		k, _, _ := strings.Cut(line, "=")
		// sh itself sets PWD (and some shells SHLVL, _): not edgecert's.
		if k != "PATH" && !strings.HasPrefix(k, "EXEC_") && k != "PWD" && k != "SHLVL" && k != "_" && k != "OLDPWD" {
			t.Errorf("the program saw %s", k)
		}
	}
	if strings.Contains(string(env), "the-cluster-secret") || strings.Contains(string(env), "another-providers-token") {
		t.Error("a secret reached the exec program's environment")
	}
	raw, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	deadline := time.Now().Add(10 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the program's child %d still runs after the group was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A program that fails says why, with the end of its output.
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"zone not found: $2\" >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = boundProvider{ctx: context.Background(), p: p}.Present("a.example.com", "tok", "tok.thumb")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "zone not found: _acme-challenge.a.example.com.") {
		t.Errorf("a failing program: %v", err)
	}
}

// A provider that takes no context is abandoned at the deadline.
func TestBoundProviderAbandonsAStuckProvider(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- boundProvider{ctx: ctx, p: stuckProvider{release}}.Present("a.example.com", "t", "k") }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Present = %v, want the deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Present waited on a stuck provider past its deadline")
	}
}

type stuckProvider struct{ release chan struct{} }

func (s stuckProvider) Present(_, _, _ string) error { <-s.release; return nil }
func (s stuckProvider) CleanUp(_, _, _ string) error { <-s.release; return nil }

// running says whether pid is a live process (a zombie waiting for its
// reaper is dead).
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")
}
