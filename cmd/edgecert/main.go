// Command edgecert keeps TLS certificates fresh for nginx containers on a
// Docker host: it watches container labels, obtains certificates over ACME
// HTTP-01, writes them atomically to a shared volume, and reloads nginx with
// proof. Commands: run (the image's), status, renew, rollback, forget,
// health, version, completion.
//
// Where things are:
//
//	main.go        the entry point
//	cli.go         the commands and their flags (cobra)
//	config.go      the environment, checked, into Config
//	daemon.go      `run`: builds the pipeline from Config and runs it
//	lock.go        one daemon per state directory
//	pipeline.go    where the stages meet: a dockerwatch snapshot into signal and acme
//	deployer.go    acme's Deployer on signal's Batcher, with hints for missing files
//	preflight.go   acme's HTTP-01 preflight through signal's probe
//	control.go     the control socket (server side) and the status document
//	client.go      status, renew, rollback, forget, health: the CLI side of the socket
//	statusview.go  the status table and detail as a terminal shows them
//	notify.go      notices: when to send (one per change) and webhooks
//	mail.go        notices by email
//	hook.go        the deploy hook
//	metrics.go     the Prometheus endpoint
package main

import (
	"os"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// processStart is when the process began to run Go code (package
// initialisation): "edgecert starting" says how long the set-up after it
// took, so that a slow start is split between the engine (starting the
// container, loading the binary) and edgecert.
var processStart = time.Now()

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}
