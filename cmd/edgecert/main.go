// Command edgecert keeps TLS certificates fresh for nginx containers on a
// Docker host: it watches container labels, obtains certificates over ACME
// HTTP-01, writes them atomically to a shared volume, and reloads nginx with
// proof. Subcommands: run (default), status, renew, health, version.
//
// Where things are:
//
//	main.go        command dispatch
//	config.go      the environment, checked, into Config
//	daemon.go      `run`: builds the pipeline from Config and runs it
//	lock.go        one daemon per state directory
//	pipeline.go    where the stages meet: a dockerwatch snapshot into signal and acme
//	deployer.go    acme's Deployer on signal's Batcher, with hints for missing files
//	preflight.go   acme's HTTP-01 preflight through signal's probe
//	control.go     the control socket (server side) and the status document
//	client.go      status, renew and health: the CLI side of the socket
//	statusview.go  the status table and detail as a terminal shows them
//	notify.go      notices: when to send (one per change) and webhooks
//	mail.go        notices by email
//	hook.go        the deploy hook
//	metrics.go     the Prometheus endpoint
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: edgecert <command> [flags]

commands:
  run                      run the daemon (the image's command; one per state directory)
  status [--json] [--warn-days N] [NAME]
                           show every certificate (or one, in detail); exit 1 if any is
                           failing or expires within N days (default 14)
  renew [--force] [--dry-run] (--all | NAME|DOMAIN...)
                           renew certificates, print progress, wait for the outcome
  forget NAME              release a certificate name, so that a container may use it for
                           other domains (its files stay until the new certificate is written)
  health                   exit 0 if the daemon is up and following the Docker Engine
  version                  print the version
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		// The image runs `edgecert run`; a bare `docker exec ... edgecert`
		// asks what it can do, and must not start a second daemon.
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(stderr)
	case "status":
		return cmdStatus(args, stdout, stderr)
	case "renew":
		return cmdRenew(args, stdout, stderr)
	case "health":
		return cmdHealth(stdout, stderr)
	case "forget":
		return cmdForget(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "edgecert: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
