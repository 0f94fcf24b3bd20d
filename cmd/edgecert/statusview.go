package main

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// How status looks in a terminal: the table of every certificate, and one
// certificate in detail with its history.

func printStatus(w io.Writer, doc StatusDoc, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tDOMAINS\tEXPIRES\tRENEWS\tPROXIES\tLAST ERROR")
	for _, c := range doc.Certificates {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, stateText(c), strings.Join(c.Domains, ","),
			expiresText(c, now), renewsText(c), proxiesText(c), oneLine(orDash(cmp.Or(c.LastError, c.DeployError))))
	}
	tw.Flush()
	if doc.Docker.Error != "" {
		fmt.Fprintf(w, "\nDocker: %s (reconnecting)\n", doc.Docker.Error)
	}
	if len(doc.Problems) > 0 {
		fmt.Fprintln(w, "\nPROBLEMS (these containers are ignored until their labels are fixed)")
		for _, p := range doc.Problems {
			fmt.Fprintln(w, "  "+p.String())
		}
	}
}

func stateText(c CertView) string {
	if c.Phase != "" {
		return string(c.State) + " (" + string(c.Phase) + ")"
	}
	return string(c.State)
}

func expiresText(c CertView, now time.Time) string {
	if c.NotAfter.IsZero() {
		return "-"
	}
	left := c.NotAfter.Sub(now)
	if left < 48*time.Hour {
		return fmt.Sprintf("%s (%s)", c.NotAfter.UTC().Format("2006-01-02 15:04"), left.Round(time.Minute))
	}
	return fmt.Sprintf("%s (%dd)", c.NotAfter.UTC().Format("2006-01-02 15:04"), int(left.Hours()/24))
}

func renewsText(c CertView) string {
	switch {
	case c.Waiting != "":
		return "waiting: " + c.Waiting
	case c.RenewAt.IsZero():
		return "-"
	}
	return c.RenewAt.UTC().Format("2006-01-02 15:04:05") + " (" + string(c.RenewSource) + ")"
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
	line("domains", strings.Join(c.Domains, ", "))
	line("containers", strings.Join(c.Containers, ", "))
	line("key type", c.KeyType)
	line("profile", c.Profile)
	line("serial", c.Serial)
	line("issuer", c.Issuer)
	if !c.NotAfter.IsZero() {
		line("valid", c.NotBefore.UTC().Format("2006-01-02 15:04")+" to "+expiresText(c, now))
	}
	line("renews", renewsText(c))
	if c.ARI != nil {
		line("ARI window", c.ARI.Start.UTC().Format("2006-01-02 15:04")+" to "+c.ARI.End.UTC().Format("2006-01-02 15:04")+" "+c.ARI.Explanation)
	}
	line("ARI error", c.ARIError)
	if !c.LastAttempt.IsZero() {
		line("last attempt", c.LastAttempt.UTC().Format(time.RFC3339))
	}
	line("last error", oneLine(c.LastError))
	if c.Permanent {
		line("", "(permanent: retrying soon will not help; fix the cause, then renew --force)")
	}
	line("reload error", oneLine(c.DeployError))
	if !c.RenewedTill.IsZero() {
		line("unused", "since "+c.UnusedSince.UTC().Format(time.RFC3339)+", renewed until "+c.RenewedTill.UTC().Format(time.RFC3339))
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
		line("proxy "+r.Container, fmt.Sprintf("%s %s (%s)", verdict, r.At.UTC().Format("2006-01-02 15:04:05"), strings.Join(steps, ", ")))
	}
	tw.Flush()
	if len(c.History) > 0 {
		fmt.Fprintln(w, "  history")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i := len(c.History) - 1; i >= 0 && i >= len(c.History)-20; i-- {
			h := c.History[i]
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", h.At.UTC().Format("2006-01-02 15:04:05"), h.Kind, orDash(h.Serial), oneLine(h.Detail))
		}
		tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
