package signal

import (
	"context"
	"errors"
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

// callTimeout bounds each Docker API call that should answer at once
// (inspect, top, kill, exec create and inspect): a stuck engine fails the
// step instead of holding the reload.
const callTimeout = 10 * time.Second

// call is ctx bounded by callTimeout.
func call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// exec runs cmd in the container and returns its combined output, cut to
// outputKeep at each end; a non-zero exit is an error carrying the output.
// It returns when ctx ends, even if the command does not.
func (r *Reloader) exec(ctx context.Context, id string, cmd []string) (string, error) {
	cctx, cancel := call(ctx)
	created, err := r.api.ContainerExecCreate(cctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	cancel()
	if err != nil {
		return "", err
	}
	stream, err := r.api.ExecOutput(ctx, created.ID)
	if err != nil {
		return "", err
	}
	out := &capped{}
	_, err = stdcopy.StdCopy(out, out, stream)
	stream.Close()
	if ctx.Err() != nil {
		return out.String(), ctx.Err()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%w: %w", errStreamLost, err)
	}
	cctx, cancel = call(ctx)
	insp, err := r.api.ContainerExecInspect(cctx, created.ID)
	cancel()
	if err != nil {
		return "", err
	}
	text := out.String()
	if insp.ExitCode != 0 {
		return text, fmt.Errorf("exit code %d: %s", insp.ExitCode, text)
	}
	return text, nil
}

// errStreamLost means a command's output stream broke before its end (an
// engine or a socket proxy dropped the attach): the command's own verdict
// is unknown, and a check may be run again.
var errStreamLost = errors.New("read output")

// outputKeep is how much of a command's output is kept at each end: enough
// for nginx's or Apache's error lines, never a memory risk.
const outputKeep = 4 << 10

// capped keeps the first and the last outputKeep bytes written to it and
// counts the rest.
type capped struct {
	head  []byte
	tail  []byte // the last bytes past head, at most outputKeep
	total int64
}

func (c *capped) Write(p []byte) (int, error) {
	c.total += int64(len(p))
	rest := p
	if room := outputKeep - len(c.head); room > 0 {
		n := min(room, len(rest))
		c.head = append(c.head, rest[:n]...)
		rest = rest[n:]
	}
	if len(rest) > 0 {
		c.tail = append(c.tail, rest...)
		if len(c.tail) > outputKeep {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-outputKeep:]...)
		}
	}
	return len(p), nil
}

// String is the kept output, saying how much was cut from its middle.
func (c *capped) String() string {
	cut := c.total - int64(len(c.head)) - int64(len(c.tail))
	if cut <= 0 {
		return strings.TrimSpace(string(c.head) + string(c.tail))
	}
	return strings.TrimSpace(string(c.head)) + fmt.Sprintf("\n[... %d bytes of output cut ...]\n", cut) + strings.TrimSpace(string(c.tail))
}

// workers returns the PIDs of live (not shutting down) workers: processes
// matching the pattern other than the container's main process (Apache's
// children show the same command line as their parent).
func (r *Reloader) workers(ctx context.Context, id string, opts Options, mainPID int) ([]int, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	top, err := r.top(ctx, id)
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

// waitNewWorkers polls until there are live workers and none of them is
// old, or ctx ends.
func (r *Reloader) waitNewWorkers(ctx context.Context, id string, opts Options, mainPID int, before []int) (string, error) {
	// docker top itself takes tens of milliseconds: look again almost at once.
	tick := time.NewTicker(5 * time.Millisecond)
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
			return pids(before) + " -> " + pids(now), fmt.Errorf("worker PIDs still %s: %w", pids(now), ctx.Err())
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
