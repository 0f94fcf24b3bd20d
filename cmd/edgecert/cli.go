package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgecert/edgecert/acme/legoissuer"
)

// The command line: spf13/cobra, as the docker CLI. Flags go anywhere on the
// line, --help exits 0, and certbot's words are aliases. Each command's work
// is a function returning the process exit code, so tests call it directly.

// exitError carries a command's exit code; what it had to say is printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exit turns a command's exit code into what cobra's RunE returns.
func exit(code int) error {
	if code == 0 {
		return nil
	}
	return exitError(code)
}

func realMain(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var code exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	// A usage error: cobra's own (an unknown flag or command, a wrong
	// number of names) or ours.
	cmd, _, ferr := root.Find(args)
	if ferr != nil || cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "edgecert: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
	return 2
}

const rootLong = `edgecert keeps TLS certificates fresh for nginx (and Apache, HAProxy) containers
on a Docker host. It watches container labels, obtains certificates over ACME,
writes them atomically to a shared volume, and reloads each proxy with proof:
a config test, a signal, new workers, and a handshake presenting the new
certificate.

The image runs 'edgecert run'; the other commands talk to that daemon and are
used through docker exec.`

const rootExample = `  docker exec edgecert edgecert status
  docker exec edgecert edgecert status shop.example.com
  docker exec edgecert edgecert renew
  docker exec edgecert edgecert renew --force shop
  docker exec edgecert edgecert rollback shop`

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "edgecert",
		Short:         "TLS certificates for nginx containers, renewed and reloaded with proof",
		Long:          rootLong,
		Example:       rootExample,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare `edgecert` (docker exec edgecert edgecert) asks what it can
		// do: help, never a second daemon.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCmd(stderr), statusCmd(stdout, stderr), renewCmd(stdout, stderr), rollbackCmd(stdout, stderr),
		forgetCmd(stdout, stderr), dnsRecordCmd(stdout, stderr), healthCmd(stdout, stderr), versionCmd(stdout))
	return root
}

func runCmd(stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the daemon (the image's command; one per state directory)",
		Long: `Run the daemon: watch the Docker Engine, order and renew certificates, write
them to the certificate volume and reload the proxies. It is configured by
EDGECERT_* environment variables (see README.md) and takes no flags.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return exit(cmdRun(stderr)) },
	}
}

func statusCmd(stdout, stderr io.Writer) *cobra.Command {
	var o statusOpts
	var c *cobra.Command
	c = &cobra.Command{
		Use:     "status [NAME|DOMAIN]",
		Aliases: []string{"certificates"},
		Short:   "Show every certificate, or one in detail with its history",
		Long: `Show every certificate the daemon manages: state, domains, expiry, next
renewal, proven reloads and the cause of any error. With a name (or one of its
domains), show that certificate in detail, with its history and full errors.

Exit status: 0 all is well; 1 a certificate in use is failing or expires within
--warn-days; 2 the daemon cannot be reached or does not follow the Docker Engine.
Monitoring can run it as it is.`,
		Example: `  edgecert status
  edgecert status shop.example.com --json
  edgecert certificates --cert-name shop
  edgecert status --warn-days 20 || alert`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			names := append(args, o.certNames...)
			if len(names) > 1 {
				return errors.New("status shows one certificate in detail, or all: name at most one")
			}
			o.warnSet = c.Flags().Changed("warn-days")
			return exit(cmdStatus(o, names, stdout, stderr))
		},
	}
	c.Flags().BoolVar(&o.json, "json", false, "print the status as JSON (the schema is in README.md)")
	c.Flags().IntVar(&o.warnDays, "warn-days", 14, "exit 1 if a certificate in use expires within this many days (unset: 14, or a third of its lifetime when that is shorter)")
	c.Flags().IntVar(&o.width, "width", 0, "fit the table to this many columns (default: the terminal's, or $COLUMNS, or 120)")
	c.Flags().StringSliceVar(&o.certNames, "cert-name", nil, "the certificate to show (certbot's flag; same as naming it)")
	return c
}

func renewCmd(stdout, stderr io.Writer) *cobra.Command {
	var o renewOpts
	c := &cobra.Command{
		Use:   "renew [NAME|DOMAIN...]",
		Short: "Renew certificates now and wait for each to be proven served",
		Long: `Renew certificates now, print their progress, and wait for the outcome: issued,
written, and proven served by every proxy.

Without names, renew what is due: certificates past their renewal time,
failing (their retry wait is skipped), not yet issued, or written but not yet
proven served. With --force and no names, renew every certificate in use.

--force orders even when a certificate is not due (at most EDGECERT_FORCED_RENEWALS
a week each; Let's Encrypt allows 5 duplicates a week). --dry-run orders from
the dry-run CA (EDGECERT_DRY_RUN_DIRECTORY) and keeps nothing: no file is
written, no proxy reloaded.

Exit status: 0 every renewal succeeded or nothing was due; 1 one failed;
2 usage error or the daemon cannot be reached.`,
		Example: `  edgecert renew
  edgecert renew shop www.example.com
  edgecert renew --force --cert-name shop
  edgecert renew --all --dry-run`,
		RunE: func(_ *cobra.Command, args []string) error {
			o.names = append(args, o.certNames...)
			if o.all && len(o.names) > 0 {
				return errors.New("--all and names exclude each other")
			}
			return exit(cmdRenew(o, stdout, stderr))
		},
	}
	f := c.Flags()
	f.BoolVar(&o.force, "force", false, "renew even if not due, and skip any retry wait")
	f.BoolVar(&o.force, "force-renewal", false, "same as --force (certbot's flag)")
	f.BoolVar(&o.dryRun, "dry-run", false, "order from the dry-run CA and discard the result: nothing is written or reloaded")
	f.BoolVar(&o.all, "all", false, "every certificate in use")
	f.StringSliceVar(&o.certNames, "cert-name", nil, "a certificate to renew (certbot's flag; same as naming it; repeatable)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long to wait for the outcome")
	return c
}

func rollbackCmd(stdout, stderr io.Writer) *cobra.Command {
	var o rollbackOpts
	c := &cobra.Command{
		Use:   "rollback NAME|DOMAIN",
		Short: "Put back the previous version of a certificate and hold its renewal",
		Long: `Put back an earlier version of a certificate (kept in the volume's .versions/)
with one atomic swap, reload and prove every proxy that uses it, and hold
automatic renewal of that certificate until 'edgecert renew NAME' releases the
hold (status says so). Without --to, the version before the current one.

A version that has expired, or that is for other names than the certificate's,
is refused.`,
		Example: `  edgecert rollback shop
  edgecert rollback shop --to 4f1c9a20e1d3b07a
  edgecert renew shop        # release the hold: renews if due`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o.name = args[0]
			return exit(cmdRollback(o, stdout, stderr))
		},
	}
	c.Flags().StringVar(&o.to, "to", "", "the serial (hex, as status shows it) of the version to put back")
	c.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the reload to be proven")
	return c
}

func forgetCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "forget NAME",
		Short: "Release a certificate name, so that a container may use it for other domains",
		Long: `Release a certificate name: the next container that asks for it gets it with its
own domains (ordered then). The files stay until that certificate is written.`,
		Example: `  edgecert forget shop`,
		Args:    cobra.ExactArgs(1),
		RunE:    func(_ *cobra.Command, args []string) error { return exit(cmdForget(args[0], stdout, stderr)) },
	}
}

func dnsRecordCmd(stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "dns-record NAME|DOMAINS",
		Short: "Print the DNS-PERSIST-01 TXT records to set, once, for a certificate, and whether DNS has them",
		Long: `Print the TXT records DNS-PERSIST-01 needs (edgecert.challenge=dns-persist-01):
one per name, at _validation-persist.<name>, naming the CA and this host's ACME
account (the cluster's, in cluster mode), with policy=wildcard when the
certificate has the wildcard under the name. Set them once at your DNS host;
edgecert checks them before every order and needs no DNS credentials.

NAME is a certificate's name or one of its domains; a comma-separated list of
domains not yet labelled works too (with the default account). Each record is
followed by what DNS shows of it now. Exit 0 when every record is in place,
1 when one is missing or wrong, 2 when edgecert cannot tell.`,
		Example: `  edgecert dns-record example.com
  edgecert dns-record 'example.com,*.example.com'`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return exit(cmdDNSRecord(args[0], asJSON, stdout, stderr))
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	return c
}

func healthCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the daemon is up and following the Docker Engine (the image's HEALTHCHECK)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return exit(cmdHealth(stdout, stderr)) },
	}
}

func versionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version (first line), then the Go release and the DNS providers built in",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "%s\ngo: %s\ndns providers: %s\n", version, runtime.Version(), legoissuer.DNSProvidersBuilt())
		},
	}
}

// plural is "1 certificate" or "n certificates".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// joinNames lists names for a sentence.
func joinNames(names []string) string { return strings.Join(names, ", ") }
