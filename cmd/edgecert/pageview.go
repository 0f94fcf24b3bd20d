package main

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/dockerwatch"
)

// What the status page shows, computed from the status document (the one
// `status --json` prints) and the clock: filtered, sorted, paged, with
// times made readable. The template escapes and places; it decides nothing.

const (
	pageRows    = 50 // certificates per page: the table and the timeline
	namesShown  = 3  // names of a certificate shown in its row; the rest on hover and in its page
	pageSortDef = "expiry"
)

// pageQuery is what the address asks for: a filter, a sort, a page.
type pageQuery struct {
	Filter string
	Sort   string // expiry (default), name, state, renewal
	Page   int    // from 1
}

// pageView is the whole page.
type pageView struct {
	Now        string
	Version    string
	Directory  string
	Docker     dockerwatch.Health
	DockerSync string
	Cluster    *ClusterView
	Hosts      bool // cluster mode: the table has each host's proof
	Query      pageQuery
	Sorts      []sortLink
	Total      int // certificates in all
	Matching   int // certificates the filter keeps
	Pages      []pageLink
	Rows       []certRow
	Timeline   timelineView
	Proxies    []proxyRow
	Problems   []dockerwatch.Problem
	Counts     []stateCount
}

type sortLink struct {
	Key, Label, Href string
	Current          bool
}

type pageLink struct {
	N       int
	Href    string
	Current bool
}

type stateCount struct {
	State string
	N     int
}

// certRow is one certificate's row in the table (and its own page).
type certRow struct {
	Name        string
	Href        string
	Names       []string // the first namesShown
	MoreNames   int
	AllNames    string
	State       string
	Expiry      string // relative: "in 59 days", "expired 2 h ago"
	ExpiryAbs   string
	Urgency     string // ok, soon (under a third of its life), expired, none
	Renewal     string
	RenewalWhy  string
	LastOrder   string
	KeyType     string
	Profile     string
	CA          string
	Challenge   string
	Cause       string // the last error's cause (its last part), first
	Error       string // the whole error
	Hint        string
	Waiting     string
	Stuck       string
	Proofs      []proofRow
	Hosts       []proofRow
	History     []historyRow
	Versions    []versionRow
	Serial      string
	NotBefore   string
	Containers  string
	DeployError string
}

type proofRow struct {
	Where  string // the proxy container, or the host in a cluster
	OK     bool
	Serial string
	When   string
	Detail string
}

type historyRow struct {
	When, Kind, Serial, Detail string
	Bad                        bool
}

type versionRow struct {
	Version, Serial, NotAfter, Written string
	Current                            bool
}

// proxyRow is one labelled proxy with its last reload.
type proxyRow struct {
	Name, Group string
	Running     bool
	When        string
	OK          bool
	Reloaded    bool
	Steps       string // "config_test 120 ms, signal 3 ms, ..."
	Error       string
	Certs       int
	Rest        string // until when it rests after a slow reload
}

// buildPage computes the page for doc at now.
func buildPage(doc StatusDoc, q pageQuery, now time.Time) pageView {
	v := pageView{Now: clock(now), Version: doc.Version, Directory: doc.Directory, Docker: doc.Docker,
		Cluster: doc.Cluster, Hosts: doc.Cluster != nil, Query: q, Total: len(doc.Certificates), Problems: doc.Problems}
	if !doc.Docker.LastSync.IsZero() {
		v.DockerSync = relative(doc.Docker.LastSync, now)
	}
	counts := map[string]int{}
	var kept []CertView
	for _, c := range doc.Certificates {
		counts[string(c.State)]++
		if matches(c, q.Filter) {
			kept = append(kept, c)
		}
	}
	for _, st := range []acme.State{acme.StateFailing, acme.StateRenewing, acme.StatePending, acme.StatePlaceholder, acme.StateValid, acme.StateUnused} {
		if counts[string(st)] > 0 {
			v.Counts = append(v.Counts, stateCount{State: string(st), N: counts[string(st)]})
		}
	}
	v.Matching = len(kept)
	sortCerts(kept, q.Sort)
	pages := max(1, (len(kept)+pageRows-1)/pageRows)
	q.Page = min(max(q.Page, 1), pages)
	v.Query.Page = q.Page
	if pages > 1 {
		for n := 1; n <= pages; n++ {
			v.Pages = append(v.Pages, pageLink{N: n, Href: q.href(q.Sort, n), Current: n == q.Page})
		}
	}
	for _, s := range [][2]string{{"expiry", "expiry"}, {"renewal", "next renewal"}, {"name", "name"}, {"state", "state"}} {
		v.Sorts = append(v.Sorts, sortLink{Key: s[0], Label: s[1], Href: q.href(s[0], 1), Current: cmp.Or(q.Sort, pageSortDef) == s[0]})
	}
	shown := kept[min((q.Page-1)*pageRows, len(kept)):min(q.Page*pageRows, len(kept))]
	for _, c := range shown {
		v.Rows = append(v.Rows, rowOf(c, now))
	}
	v.Timeline = buildTimeline(shown, now)
	for _, p := range doc.Proxies {
		v.Proxies = append(v.Proxies, proxyRowOf(p, now))
	}
	return v
}

// href is the page's address with the filter kept.
func (q pageQuery) href(sort string, page int) string {
	var parts []string
	if q.Filter != "" {
		parts = append(parts, "q="+url.QueryEscape(q.Filter))
	}
	if sort != "" && sort != pageSortDef {
		parts = append(parts, "sort="+url.QueryEscape(sort))
	}
	if page > 1 {
		parts = append(parts, fmt.Sprintf("page=%d", page))
	}
	if len(parts) == 0 {
		return "./"
	}
	return "./?" + strings.Join(parts, "&")
}

// matches says whether c has filter (case-insensitive) in its name, one of
// its names, its state or one of its containers.
func matches(c CertView, filter string) bool {
	f := strings.ToLower(strings.TrimSpace(filter))
	if f == "" {
		return true
	}
	if strings.Contains(strings.ToLower(c.Name), f) || strings.Contains(string(c.State), f) {
		return true
	}
	for _, s := range append(slices.Clone(c.Domains), c.Containers...) {
		if strings.Contains(strings.ToLower(s), f) {
			return true
		}
	}
	return false
}

// sortCerts sorts in place: by expiry (soonest first, none last), next
// renewal, name or state (the worst first), the name breaking ties.
func sortCerts(cs []CertView, by string) {
	rank := map[acme.State]int{acme.StateFailing: 0, acme.StateRenewing: 1, acme.StatePending: 2, acme.StatePlaceholder: 3, acme.StateValid: 4, acme.StateUnused: 5}
	timeKey := func(t time.Time) int64 {
		if t.IsZero() {
			return 1 << 62
		}
		return t.Unix()
	}
	slices.SortStableFunc(cs, func(a, b CertView) int {
		var c int
		switch by {
		case "name":
		case "state":
			c = cmp.Compare(rank[a.State], rank[b.State])
		case "renewal":
			c = cmp.Compare(timeKey(a.RenewAt), timeKey(b.RenewAt))
		default:
			c = cmp.Compare(timeKey(a.NotAfter), timeKey(b.NotAfter))
		}
		return cmp.Or(c, strings.Compare(a.Name, b.Name))
	})
}

// rowOf is c's row.
func rowOf(c CertView, now time.Time) certRow {
	r := certRow{Name: c.Name, Href: "cert/" + url.PathEscape(c.Name), State: string(c.State), KeyType: c.KeyType, Profile: c.Profile,
		CA: c.Issuer, Challenge: c.Challenge, Hint: c.Hint, Waiting: c.Waiting, Stuck: c.OrderStuck, Serial: c.Serial,
		AllNames: strings.Join(c.Domains, ", "), Containers: strings.Join(c.Containers, ", "), DeployError: c.DeployError, Urgency: "none"}
	if c.DNSProvider != "" {
		r.Challenge += " (" + c.DNSProvider + ")"
	}
	r.Names = c.Domains[:min(namesShown, len(c.Domains))]
	r.MoreNames = len(c.Domains) - len(r.Names)
	if !c.NotAfter.IsZero() {
		r.ExpiryAbs = clock(c.NotAfter)
		r.NotBefore = clock(c.NotBefore)
		switch life, left := c.NotAfter.Sub(c.NotBefore), c.NotAfter.Sub(now); {
		case left <= 0:
			r.Expiry, r.Urgency = "expired "+relative(c.NotAfter, now), "expired"
		case left < life/3:
			r.Expiry, r.Urgency = relative(c.NotAfter, now), "soon"
		default:
			r.Expiry, r.Urgency = relative(c.NotAfter, now), "ok"
		}
		if c.State == acme.StatePlaceholder {
			r.Expiry, r.Urgency = "placeholder", "none"
		}
	}
	if !c.RenewAt.IsZero() {
		r.Renewal = relative(c.RenewAt, now)
		if c.RenewAt.Before(now) {
			r.Renewal = "due " + relative(c.RenewAt, now)
		}
		r.RenewalWhy = renewWhy(c.CertStatus)
	}
	if !c.LastAttempt.IsZero() {
		r.LastOrder = relative(c.LastAttempt, now)
	}
	if c.LastError != "" {
		r.Error = c.LastError
		r.Cause = errorCause(c.LastError)
	}
	for _, rep := range c.Reloads {
		pr := proofRow{Where: rep.Container, OK: rep.OK, When: relative(rep.At, now), Detail: rep.Error}
		if rep.OK {
			pr.Serial = c.Serial
		}
		r.Proofs = append(r.Proofs, pr)
	}
	for _, h := range c.Hosts {
		r.Hosts = append(r.Hosts, proofRow{Where: h.Node, OK: h.Alive && h.Serial == c.Serial, Serial: h.Serial, When: relative(h.At, now)})
	}
	for i := len(c.History) - 1; i >= 0; i-- { // newest first
		e := c.History[i]
		r.History = append(r.History, historyRow{When: clock(e.At), Kind: strings.ReplaceAll(string(e.Kind), "_", " "),
			Serial: e.Serial, Detail: e.Detail, Bad: e.Kind == acme.EventOrderFailed || e.Kind == acme.EventReloadFailed || e.Kind == acme.EventWriteFailed})
	}
	return r
}

// renewWhy says where the planned renewal comes from.
func renewWhy(s acme.CertStatus) string {
	switch s.RenewSource {
	case acme.SourceARI:
		if s.ARI != nil {
			return "in the window the CA suggested (ARI), " + clock(s.ARI.Start) + " to " + clock(s.ARI.End)
		}
		return "in the window the CA suggested (ARI)"
	case acme.SourceRatio:
		return "a third of its lifetime left, half under 10 days (the CA suggested no window)"
	case acme.SourceEmergency:
		return "under 1/20 of its lifetime left: now, whatever the CA suggested"
	case acme.SourceRetry:
		return fmt.Sprintf("retry after %d failures", s.Failures)
	}
	return string(s.RenewSource)
}

func proxyRowOf(p ProxyView, now time.Time) proxyRow {
	r := proxyRow{Name: p.Name, Group: cmp.Or(p.Group, "every certificate"), Running: p.Running}
	if rep := p.LastReload; rep != nil {
		r.When, r.OK, r.Reloaded, r.Error, r.Certs = relative(rep.At, now), rep.OK, rep.Reloaded, rep.Error, rep.Batch
		var steps []string
		for _, s := range rep.Steps {
			steps = append(steps, fmt.Sprintf("%s %d ms", strings.ReplaceAll(s.Step, "_", " "), s.TookMS))
		}
		r.Steps = strings.Join(steps, ", ")
	}
	if p.RestUntil.After(now) {
		r.Rest = clock(p.RestUntil)
	}
	return r
}
