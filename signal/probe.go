package signal

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
)

// What the reloader learns from the network: which addresses of a proxy
// edgecert can reach, which certificate a TLS handshake shows, and whether
// an HTTP path serves a given body (the HTTP-01 preflight).

// addresses returns the proxy's TLS addresses (IPv4, and IPv6 where its
// network has it) on networks edgecert shares with it (all of them when
// edgecert does not run in a container), IPv4 first.
func (r *Reloader) addresses(ctx context.Context, info container.InspectResponse, port int) []string {
	shared := map[string]bool{}
	self := r.opts.Self
	if self != "" {
		cctx, cancel := call(ctx)
		me, err := r.api.ContainerInspect(cctx, self)
		cancel()
		if err == nil && me.NetworkSettings != nil {
			for n := range me.NetworkSettings.Networks {
				shared[n] = true
			}
		} else {
			self = ""
		}
	}
	var out []string
	if info.NetworkSettings == nil {
		return nil
	}
	for n, ep := range info.NetworkSettings.Networks {
		if ep == nil || (self != "" && !shared[n]) {
			continue
		}
		for _, ip := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
			if ip != "" {
				out = append(out, net.JoinHostPort(ip, strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return out
}

// ErrNoSharedNetwork means edgecert cannot reach the proxy to check it.
var ErrNoSharedNetwork = errors.New("edgecert shares no network with the proxy")

// ErrRedirectedAway means the proxy redirects the challenge URL to a place
// that is not itself (another host name, or a port other than 80 and 443):
// what a CA finds there cannot be checked from here.
var ErrRedirectedAway = errors.New("the challenge URL is redirected away from the proxy")

// maxRedirects is how many redirects a validation follows, as Let's Encrypt's.
const maxRedirects = 10

// ServesFile checks that p answers GET http://host:port/path with the body
// want: the HTTP-01 preflight, so that an order is placed only when the CA
// will find the token. Like a CA's validator it follows redirects (up to 10,
// http or https, ports 80 and 443, certificates not verified), but every
// request goes to p's own addresses; a redirect to another host name
// returns ErrRedirectedAway.
func (r *Reloader) ServesFile(ctx context.Context, p Proxy, port int, host, path string, want []byte) error {
	cctx, cancel := call(ctx)
	info, err := r.api.ContainerInspect(cctx, p.ID)
	cancel()
	if err != nil {
		return fmt.Errorf("inspect %s: %w", p.Name, err)
	}
	if info.State == nil || !info.State.Running {
		return fmt.Errorf("%s is not running", p.Name)
	}
	addrs := r.addresses(ctx, info, port)
	if len(addrs) == 0 {
		return ErrNoSharedNetwork
	}
	var lastErr error
	for _, a := range addrs {
		ip, _, _ := net.SplitHostPort(a)
		hostport := host // as a CA sends it: no port for 80
		if port != 80 {
			hostport = net.JoinHostPort(host, strconv.Itoa(port))
		} else if strings.Contains(host, ":") {
			hostport = "[" + host + "]" // an IPv6 address
		}
		err := fetchFrom(ctx, ip, "http://"+hostport+path, host, want)
		if err == nil || errors.Is(err, ErrRedirectedAway) {
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("%s: %w", p.Name, lastErr)
}

// fetchFrom GETs url, and the redirects it leads to, from the server at ip
// whatever the URL's host, and checks that the final answer is want.
func fetchFrom(ctx context.Context, ip, url, host string, want []byte) error {
	dialer := &net.Dialer{Timeout: 3 * time.Second}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as a CA's validator: the token is what counts
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
			},
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			switch {
			case len(via) >= maxRedirects:
				return fmt.Errorf("more than %d redirects", maxRedirects)
			case !strings.EqualFold(req.URL.Hostname(), host):
				return fmt.Errorf("%w: to %s", ErrRedirectedAway, req.URL)
			case !slices.Contains([]string{"", "80", "443", via[0].URL.Port()}, req.URL.Port()):
				return fmt.Errorf("%w: to %s (a CA follows redirects to ports 80 and 443 only)", ErrRedirectedAway, req.URL)
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK && bytes.Equal(bytes.TrimSpace(body), want) {
		return nil
	}
	return fmt.Errorf("GET %s (from %s) answered %d, not the token edgecert wrote", resp.Request.URL, ip, resp.StatusCode)
}

// SelfID returns this process's container ID when it runs in a container
// (Docker and Podman set the hostname to the short ID; Docker marks its
// containers with /.dockerenv, Podman with /run/.containerenv), or ""
// otherwise.
func SelfID() string {
	_, docker := os.Stat("/.dockerenv")
	_, podman := os.Stat("/run/.containerenv")
	if docker != nil && podman != nil {
		return ""
	}
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}
