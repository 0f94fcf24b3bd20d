package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/sys/unix"

	"github.com/edgecert/edgecert/dockerwatch"
)

// How status looks in a terminal: the table of every certificate, and one
// certificate in detail with its history.

// printStatus prints the table of every certificate, fitted to width
// columns: the columns that matter least are left out when they do not
// fit, and a certificate's error goes on its own line below it, cause first.
func printStatus(w io.Writer, doc StatusDoc, now time.Time, width int) {
	cols := [][]string{{"NAME"}, {"STATE"}, {"DOMAINS"}, {"EXPIRES"}, {"RENEWS"}, {"PROXIES"}}
	var errs []string
	for _, c := range doc.Certificates {
		for i, cell := range []string{c.Name, stateText(c), domainsText(c.Domains), expiresText(c, now), renewsText(c, now), proxiesText(c)} {
			cols[i] = append(cols[i], cell)
		}
		errs = append(errs, cmp.Or(c.LastError, c.DeployError))
	}
	// Leave out PROXIES, then RENEWS, while the table is too wide.
	for len(cols) > 4 && tableWidthOf(cols) > width {
		cols = cols[:len(cols)-1]
	}
	widths := make([]int, len(cols))
	for i, col := range cols {
		for _, cell := range col {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for row := range cols[0] {
		b.Reset()
		for i, col := range cols {
			b.WriteString(col[row])
			if i < len(cols)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(col[row])+2))
			}
		}
		fmt.Fprintln(w, b.String())
		if row > 0 && errs[row-1] != "" {
			fmt.Fprintln(w, cut("  error: "+errorCause(errs[row-1]), max(width, 40)))
		}
	}
	if doc.Docker.Error != "" {
		fmt.Fprintf(w, "\nDocker: %s (reconnecting)\n", doc.Docker.Error)
	}
	if cl := doc.Cluster; cl != nil {
		if cl.Reachable {
			fmt.Fprintf(w, "\nCluster: node %s, in the cluster\n", cl.Node)
		} else {
			fmt.Fprintf(w, "\nCluster: node %s, CLUSTER UNREACHABLE since %s: %s (serving what it has, ordering nothing)\n", cl.Node, clock(cl.Since), cl.Error)
		}
		for _, c := range doc.Certificates {
			if len(c.Hosts) > 0 {
				fmt.Fprintln(w, cut("  "+c.Name+": "+hostsText(c), max(width, 40)))
			}
		}
	}
	if len(doc.Problems) > 0 {
		fmt.Fprintln(w, "\nPROBLEMS (these containers are ignored until their labels are fixed)")
		for _, p := range doc.Problems {
			fmt.Fprintln(w, cut("  "+p.String(), max(width, 40)))
		}
	}
}

// tableWidthOf is the width of cols printed two spaces apart.
func tableWidthOf(cols [][]string) int {
	total := 0
	for _, col := range cols {
		wd := 0
		for _, cell := range col {
			wd = max(wd, utf8.RuneCountInString(cell))
		}
		total += wd + 2
	}
	return total - 2
}

// cut shortens s to n characters, ending it with "…" when cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// domainsText is the first domain, and how many more: the detail view
// lists them all.
func domainsText(domains []string) string {
	switch len(domains) {
	case 0:
		return "-"
	case 1:
		return withUnicode(domains[0])
	}
	return fmt.Sprintf("%s +%d", withUnicode(domains[0]), len(domains)-1)
}

// withUnicode adds the Unicode form of an internationalised name:
// "xn--bcher-kva.example (bücher.example)".
func withUnicode(d string) string {
	if u, err := idna.Lookup.ToUnicode(d); err == nil && u != d {
		return d + " (" + u + ")"
	}
	return d
}

func stateText(c CertView) string {
	if c.OrderStuck != "" {
		return string(c.State) + " (" + string(c.Phase) + ", STUCK)"
	}
	if c.Phase != "" {
		return string(c.State) + " (" + string(c.Phase) + ")"
	}
	return string(c.State)
}

func expiresText(c CertView, now time.Time) string {
	if c.NotAfter.IsZero() {
		return "-"
	}
	return relative(c.NotAfter, now)
}

func renewsText(c CertView, now time.Time) string {
	switch {
	case c.Held != nil:
		return "held (rollback)"
	case c.Waiting != "":
		return "waiting: " + c.Waiting
	case c.RenewAt.IsZero():
		return "-"
	}
	return relative(c.RenewAt, now) + " (" + string(c.RenewSource) + ")"
}

// relative is "in 29d 4h" or "3m 10s ago": the one duration style.
func relative(t, now time.Time) string {
	if d := t.Sub(now); d >= 0 {
		return "in " + span(d)
	}
	return span(now.Sub(t)) + " ago"
}

// span writes d in its two largest units: 29d 4h, 5h 20m, 4m 10s, 12s.
func span(d time.Duration) string {
	d = d.Round(time.Second)
	units := []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	for i, u := range units {
		if d < u.size && i < len(units)-1 {
			continue
		}
		out := fmt.Sprintf("%d%s", d/u.size, u.name)
		if i < len(units)-1 {
			if rest := (d % u.size) / units[i+1].size; rest > 0 {
				out += fmt.Sprintf(" %d%s", rest, units[i+1].name)
			}
		}
		return out
	}
	return "0s"
}

// clock is a time as status shows it: local to the daemon's container
// (UTC unless TZ says otherwise), with its zone.
func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

// errorCause puts the cause of an error first. An ACME problem reads
// "acme: error: 403 :: POST :: https://… :: urn:ietf:params:acme:error:unauthorized :: Invalid response…"
// behind edgecert's own context; the table shows "Invalid response… (unauthorized; 403 POST https://…; context)".
func errorCause(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	const mark = "acme: error: "
	i := strings.Index(s, mark)
	if i < 0 {
		return s
	}
	context := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s[:i]), ":"))
	parts := strings.Split(s[i+len(mark):], " :: ")
	var where, typ, detail string
	switch {
	case len(parts) >= 5:
		where, typ, detail = parts[0]+" "+parts[1]+" "+parts[2], parts[3], strings.Join(parts[4:], " :: ")
	case len(parts) >= 3:
		where, typ, detail = parts[0], parts[1], strings.Join(parts[2:], " :: ")
	default:
		return s
	}
	if where == "0" {
		where = "" // a challenge's or an order's own error: no HTTP status
	}
	about := []string{strings.TrimPrefix(typ, "urn:ietf:params:acme:error:")}
	for _, a := range []string{where, context} {
		if a != "" {
			about = append(about, a)
		}
	}
	return detail + " (" + strings.Join(about, "; ") + ")"
}

func proxiesText(c CertView) string {
	if len(c.Reloads) == 0 {
		return "-"
	}
	ok := 0
	for _, r := range c.Reloads {
		if r.OK {
			ok++
		}
	}
	return fmt.Sprintf("%d/%d proven", ok, len(c.Reloads))
}

// printDetail shows one certificate with its recent history.
func printDetail(w io.Writer, c CertView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s\n", c.Name, stateText(c))
	line := func(k, v string) {
		if v != "" && v != "-" {
			fmt.Fprintf(tw, "  %s\t%s\n", k, v)
		}
	}
	var names []string
	for _, d := range c.Domains {
		if dockerwatch.IsIP(d) {
			names = append(names, d+" (IP address)")
		} else {
			names = append(names, withUnicode(d))
		}
	}
	line("domains", strings.Join(names, ", "))
	line("containers", strings.Join(c.Containers, ", "))
	line("key type", c.KeyType)
	line("profile", c.Profile)
	if c.DNSProvider != "" {
		line("challenge", c.Challenge+" through "+c.DNSProvider)
	} else {
		line("challenge", c.Challenge)
	}
	line("serial", c.Serial)
	line("issuer", c.Issuer)
	if !c.NotAfter.IsZero() {
		line("valid", clock(c.NotBefore)+" to "+clock(c.NotAfter)+" (expires "+expiresText(c, now)+")")
	}
	switch {
	case c.Held != nil:
		line("renews", fmt.Sprintf("held: rolled back to serial %s at %s; automatic renewal waits for `edgecert renew %s`", c.Held.Serial, clock(c.Held.At), c.Name))
	case c.Waiting != "":
		line("renews", "waiting: "+c.Waiting)
	case !c.RenewAt.IsZero():
		line("renews", clock(c.RenewAt)+" ("+relative(c.RenewAt, now)+", "+string(c.RenewSource)+")")
	}
	if c.ARI != nil {
		line("ARI window", clock(c.ARI.Start)+" to "+clock(c.ARI.End)+" "+c.ARI.Explanation)
	}
	line("ARI error", c.ARIError)
	line("ORDER STUCK", c.OrderStuck)
	if !c.LastAttempt.IsZero() {
		line("last attempt", clock(c.LastAttempt)+" ("+relative(c.LastAttempt, now)+")")
	}
	if !c.NextRetry.IsZero() {
		line("next retry", clock(c.NextRetry)+" ("+relative(c.NextRetry, now)+")")
	}
	line("last error", errorCause(c.LastError))
	if c.Permanent {
		line("", "(permanent: retrying soon will not help; fix the cause, then renew --force)")
	}
	line("reload error", oneLine(c.DeployError))
	line("hint", oneLine(c.Hint))
	if len(c.Hosts) > 0 {
		line("hosts", hostsText(c))
	}
	if !c.RenewedTill.IsZero() {
		line("unused", "since "+clock(c.UnusedSince)+", renewed until "+clock(c.RenewedTill))
	}
	for _, r := range c.Reloads {
		verdict := "proven"
		if !r.OK {
			verdict = "FAILED at " + r.FailedStep
		}
		var steps []string
		for _, st := range r.Steps {
			steps = append(steps, fmt.Sprintf("%s %dms", st.Step, st.TookMS))
		}
		line("proxy "+r.Container, fmt.Sprintf("%s %s (%s)", verdict, clock(r.At), strings.Join(steps, ", ")))
	}
	tw.Flush()
	if len(c.History) > 0 {
		fmt.Fprintln(w, "  history")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i := len(c.History) - 1; i >= 0 && i >= len(c.History)-20; i-- {
			h := c.History[i]
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", clock(h.At), h.Kind, orDash(h.Serial), oneLine(h.Detail))
		}
		tw.Flush()
	}
}

// hostsText is every host's proof of a certificate: node, and the serial
// when it is not the certificate's own.
func hostsText(c CertView) string {
	var parts []string
	for _, h := range c.Hosts {
		p := h.Node + " proven"
		if h.Serial != c.Serial {
			p = h.Node + " serves " + h.Serial
		}
		if !h.Alive {
			p += " (gone)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine joins s onto one line; the detail view keeps all of it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// tableWidth is the width to fit the table to: the flag, else $COLUMNS,
// else the terminal's (docker exec -t), else 120.
func tableWidth(flag int, out io.Writer) int {
	if flag > 0 {
		return flag
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	if f, ok := out.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 120
}
