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
//
// The control socket has a lock of its own (<socket>.lock) for the same
// reason: a socket file exists from bind(2), before listen(2), so "a socket
// that answers belongs to a live daemon" has a window in which a live
// daemon's socket refuses. Only the holder of the socket's lock removes or
// makes the socket file.

// errLocked means another daemon holds the state directory.
var errLocked = errors.New("another edgecert daemon runs on this state directory")

// errSocketHeld means another daemon holds the control socket.
var errSocketHeld = errors.New("another edgecert daemon holds this control socket")

// lockState takes the state directory's lock, or says who holds it.
func lockState(stateDir string) (*os.File, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := flockFile(filepath.Join(stateDir, "edgecert.lock"), errLocked)
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("%w; use `edgecert status` or `edgecert renew` to talk to it", err)
	}
	return f, err
}

// flockFile takes an exclusive flock(2) on path without waiting and writes
// who holds it there. When another process (or another open file in this
// one) holds it, the error wraps held and names the holder.
func flockFile(path string, held error) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s: %s)", held, filepath.Dir(path), strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	note := fmt.Sprintf("pid %d in container %s, started %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(note), 0)
	}
	return f, nil
}
