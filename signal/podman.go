package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// Podman's Docker-compatible top runs ps inside the container (podman
// #9803, #8033): in an image without ps, as most nginx images are, it
// answers nothing. Podman's own top reads the container's processes from
// the host's /proc (psgo), whatever the image holds; with the descriptors
// hpid and args it gives host PIDs and command lines, the same columns the
// proof reads from Docker's.

// top lists the processes of container id, through Options.Top if set.
func (r *Reloader) top(ctx context.Context, id string) (container.TopResponse, error) {
	if r.opts.Top != nil {
		return r.opts.Top(ctx, id)
	}
	return r.api.ContainerTop(ctx, id, nil)
}

// LibpodTop is container top through Podman's own API on the engine c
// talks to: PID (the host's) and COMMAND columns.
func LibpodTop(c *client.Client) func(ctx context.Context, id string) (container.TopResponse, error) {
	base := "http://podman"
	if u, err := url.Parse(c.DaemonHost()); err == nil && u.Scheme == "tcp" {
		base = "http://" + u.Host
		if tr, ok := c.HTTPClient().Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
			base = "https://" + u.Host
		}
	}
	return func(ctx context.Context, id string) (container.TopResponse, error) {
		var out container.TopResponse
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			base+"/v4.0.0/libpod/containers/"+url.PathEscape(id)+"/top?ps_args=hpid,args", nil)
		if err != nil {
			return out, err
		}
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			return out, fmt.Errorf("podman top: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if err != nil {
			return out, fmt.Errorf("podman top: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return out, fmt.Errorf("podman top: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		if err := json.Unmarshal(body, &out); err != nil {
			return out, fmt.Errorf("podman top: %w", err)
		}
		if i := slices.Index(out.Titles, "HPID"); i >= 0 {
			out.Titles[i] = "PID"
		}
		return out, nil
	}
}
