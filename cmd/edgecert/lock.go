package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// One daemon per state directory: two would order the same certificates
// and fight over the control socket. The lock is an flock(2) on
// <state>/edgecert.lock, released by the kernel when the process ends (even
// by SIGKILL), so a crash never leaves a stale lock. The file says who holds
// it, for the message the second daemon prints.

// errLocked means another daemon holds the state directory.
var errLocked = errors.New("another edgecert daemon runs on this state directory")

// lockState takes the state directory's lock, or says who holds it.
func lockState(stateDir string) (*os.File, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(stateDir, "edgecert.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s: %s); use `edgecert status` or `edgecert renew` to talk to it",
				errLocked, stateDir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	note := fmt.Sprintf("pid %d in container %s, started %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(note), 0)
	}
	return f, nil
}
