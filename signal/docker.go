package signal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// Docker is the Engine on the Docker client. Its calls are the client's,
// but for one: an exec's output is read as a plain HTTP response.
//
// The client starts an exec by upgrading the connection (Connection:
// Upgrade, Upgrade: tcp) and then no longer watches its context: a command
// that never ends would hold the reload for good. And HAProxy 2.4 to 3.0,
// the engine of the usual socket proxies, drops an upgrade whose request
// has a body, which an exec start always has, so `docker exec` through them
// fails with "unable to upgrade to tcp, received 200". Without the Upgrade
// header the engine answers "200 OK" and streams the output until the
// command ends, as any HTTP response through any proxy, under the request's
// context.
func Docker(c *client.Client) Engine { return dockerEngine{c} }

type dockerEngine struct{ *client.Client }

func (d dockerEngine) ExecOutput(ctx context.Context, execID string) (io.ReadCloser, error) {
	body, err := json.Marshal(container.ExecStartOptions{})
	if err != nil {
		return nil, err
	}
	u := d.baseURL() + "/v" + d.ClientVersion() + "/exec/" + url.PathEscape(execID) + "/start"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(d.DaemonHost(), "unix://") {
		req.Host = client.DummyHost
	}
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("exec start: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("exec start: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.Body, nil
}

// baseURL is where the client sends its requests: the socket's transport
// ignores the host, a TCP daemon is at its address, https when the client
// was given TLS files (as client.FromEnv is by DOCKER_CERT_PATH).
func (d dockerEngine) baseURL() string {
	host := d.DaemonHost()
	proto, addr, _ := strings.Cut(host, "://")
	scheme := "http"
	if os.Getenv("DOCKER_CERT_PATH") != "" {
		scheme = "https"
	}
	if proto == "unix" || proto == "npipe" {
		return scheme + "://" + client.DummyHost
	}
	return scheme + "://" + addr
}
