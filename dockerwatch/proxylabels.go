package dockerwatch

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A proxy container's labels: which group it serves, how it is signalled,
// tested and proven.

// parseProxy reads the labels of c, whose <prefix>.nginx label is v.
func parseProxy(p string, c Container, v string) (*Proxy, []Problem) {
	v = strings.TrimSpace(v)
	proxy := &Proxy{ID: c.ID, Name: c.Name, TLSPort: 443, Running: c.Running, Starts: c.Starts}
	switch strings.ToLower(v) {
	case "true", "1", "yes":
	case "false", "0", "no", "":
		return nil, nil
	default:
		if !groupRE.MatchString(v) {
			return nil, []Problem{{c.Name, p + labelNginx, fmt.Sprintf("%q is neither true, false nor a group name (letters, digits, '.', '_', '-')", v)}}
		}
		proxy.Group = v
	}
	if raw, ok := c.Labels[p+labelTLSPort]; ok {
		port, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || port < 1 || port > 65535 {
			return nil, []Problem{{c.Name, p + labelTLSPort, fmt.Sprintf("%q is not a port number (1-65535)", raw)}}
		}
		proxy.TLSPort = port
	}
	if raw, ok := c.Labels[p+labelSignal]; ok {
		sig := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(raw)), "SIG")
		if !slices.Contains(Signals, sig) {
			return nil, []Problem{{c.Name, p + labelSignal, fmt.Sprintf("%q: want one of %s (a reload signal, not one that stops the proxy)", raw, strings.Join(Signals, ", "))}}
		}
		proxy.Signal = sig
	}
	if raw, ok := c.Labels[p+labelTest]; ok {
		proxy.HasConfigTest = true
		if f := strings.Fields(raw); len(f) > 0 {
			proxy.ConfigTest = f
		}
	}
	if raw, ok := c.Labels[p+labelReload]; ok {
		if f := strings.Fields(raw); len(f) > 0 {
			proxy.ReloadCommand = f
		}
	}
	if raw, ok := c.Labels[p+labelCombined]; ok {
		if !isBool(strings.TrimSpace(raw)) {
			return nil, []Problem{{c.Name, p + labelCombined, fmt.Sprintf("%q: want true or false", raw)}}
		}
		switch strings.ToLower(strings.TrimSpace(raw)) {
		case "true", "1", "yes":
			proxy.CombinedPEM = true
		}
	}
	if raw, ok := c.Labels[p+labelWorkers]; ok {
		raw = strings.TrimSpace(raw)
		if raw == "" || len(raw) > 200 {
			return nil, []Problem{{c.Name, p + labelWorkers, "want a non-empty part of the worker processes' command line (as docker top shows it), at most 200 characters"}}
		}
		proxy.WorkerPattern = raw
	}
	return proxy, nil
}

func isBool(v string) bool {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "false", "0", "no":
		return true
	}
	return false
}
