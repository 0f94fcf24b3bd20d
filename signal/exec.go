package signal

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// What the reloader asks of the engine about a container's processes:
// commands run through exec, and worker PIDs read through top.

// exec runs cmd in the container and returns its combined output; a non-zero
// exit is an error carrying the output.
func (r *Reloader) exec(ctx context.Context, id string, cmd []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	created, err := r.api.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", err
	}
	att, err := r.api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	_, err = stdcopy.StdCopy(&out, &out, att.Reader)
	att.Close()
	if err != nil {
		return "", fmt.Errorf("read output: %w", err)
	}
	insp, err := r.api.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return "", err
	}
	text := strings.TrimSpace(out.String())
	if insp.ExitCode != 0 {
		return text, fmt.Errorf("exit code %d: %s", insp.ExitCode, text)
	}
	return text, nil
}

// workers returns the PIDs of live (not shutting down) workers: processes
// matching the pattern other than the container's main process (Apache's
// children show the same command line as their parent).
func (r *Reloader) workers(ctx context.Context, id string, opts Options, mainPID int) ([]int, error) {
	top, err := r.api.ContainerTop(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	pidCol, cmdCol := slices.Index(top.Titles, "PID"), slices.Index(top.Titles, "CMD")
	if cmdCol < 0 {
		cmdCol = slices.Index(top.Titles, "COMMAND")
	}
	if pidCol < 0 || cmdCol < 0 {
		return nil, fmt.Errorf("docker top has no PID or CMD column: %v", top.Titles)
	}
	var out []int
	for _, p := range top.Processes {
		if len(p) <= max(pidCol, cmdCol) {
			continue
		}
		cmd := p[cmdCol]
		if !strings.Contains(cmd, opts.WorkerPattern) || (opts.ShuttingDown != "" && strings.Contains(cmd, opts.ShuttingDown)) {
			continue
		}
		pid, err := strconv.Atoi(p[pidCol])
		if err == nil && pid != mainPID {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitNewWorkers polls until there are live workers and none of them is old.
func (r *Reloader) waitNewWorkers(ctx context.Context, id string, opts Options, mainPID int, before []int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var now []int
	for {
		var err error
		now, err = r.workers(ctx, id, opts, mainPID)
		if err == nil && len(now) > 0 && !slices.ContainsFunc(now, func(p int) bool { return slices.Contains(before, p) }) {
			return pids(before) + " -> " + pids(now), nil
		}
		select {
		case <-ctx.Done():
			return pids(before) + " -> " + pids(now), fmt.Errorf("worker PIDs still %s after %s", pids(now), opts.Timeout)
		case <-tick.C:
		}
	}
}

func pids(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return "[" + strings.Join(s, " ") + "]"
}
