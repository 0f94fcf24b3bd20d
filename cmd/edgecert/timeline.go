package main

import (
	"slices"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// The status page's timeline: one row per certificate on a shared time
// axis, drawn as SVG on the server. Pure geometry from the status document
// and the clock; the template only places what is computed here.

const (
	timelineWidth = 1000.0 // the SVG's user units; it scales to the page's width
	timelineRow   = 22.0   // one certificate's row height
)

// axis maps times to x on [0, timelineWidth] between From and To.
type axis struct{ From, To time.Time }

// x is t's position, clamped to the axis.
func (a axis) x(t time.Time) float64 {
	span := a.To.Sub(a.From)
	if span <= 0 {
		return 0
	}
	f := float64(t.Sub(a.From)) / float64(span)
	return min(max(f, 0), 1) * timelineWidth
}

// axisFor is the span the rows need: from the earliest start of a shown
// validity (current or past version, at most maxBack before now) to the
// latest end (at most maxAhead after now), and never less than two days
// around now.
func axisFor(certs []CertView, now time.Time) axis {
	const maxBack, maxAhead = 120 * 24 * time.Hour, 400 * 24 * time.Hour
	from, to := now.Add(-24*time.Hour), now.Add(24*time.Hour)
	for _, c := range certs {
		for _, seg := range versionsOf(c.CertStatus) {
			from = minTime(from, seg.From)
		}
		if !c.NotAfter.IsZero() {
			to = maxTime(to, c.NotAfter)
		}
		if !c.RenewAt.IsZero() {
			to = maxTime(to, c.RenewAt)
		}
	}
	return axis{From: maxTime(from, now.Add(-maxBack)), To: minTime(to, now.Add(maxAhead))}
}

// segment is a span of time a version was (or is) served.
type segment struct {
	From, To time.Time
	Serial   string
	Current  bool
}

// versionsOf is the certificate's validity as segments, oldest first: each
// past version from its issue to the next one's (from the history), the
// current one from NotBefore to NotAfter.
func versionsOf(s acme.CertStatus) []segment {
	var out []segment
	var prev *acme.Event
	for i := range s.History {
		e := &s.History[i]
		switch e.Kind {
		case acme.EventIssued, acme.EventImported, acme.EventRolledBack:
		default:
			continue
		}
		if prev != nil && prev.Serial != s.Serial {
			out = append(out, segment{From: prev.At, To: e.At, Serial: prev.Serial})
		}
		prev = e
	}
	if !s.NotBefore.IsZero() && !s.NotAfter.IsZero() && s.State != acme.StatePlaceholder {
		out = append(out, segment{From: s.NotBefore, To: s.NotAfter, Serial: s.Serial, Current: true})
	}
	return out
}

// timelineRowView is one certificate's row, in SVG units.
type timelineRowView struct {
	Name     string
	Y        float64
	Segments []segView
	Window   *spanView // the renewal window the CA suggested (ARI)
	RenewX   float64   // the planned renewal; -1: none
	RenewWhy string
	Failures []markView
	Expired  bool
}

type segView struct {
	X, W    float64
	Current bool
	Title   string
}

type spanView struct{ X, W float64 }

type markView struct {
	X     float64
	Title string
}

// timelineView is the whole SVG: its rows, the now line and the ticks.
type timelineView struct {
	Height float64
	NowX   float64
	Rows   []timelineRowView
	Ticks  []tickView
}

type tickView struct {
	X     float64
	Label string
}

// buildTimeline lays out certs (already filtered, sorted and paged) on the
// axis they need.
func buildTimeline(certs []CertView, now time.Time) timelineView {
	a := axisFor(certs, now)
	tv := timelineView{Height: timelineRow*float64(len(certs)) + 20, NowX: a.x(now)}
	for i, c := range certs {
		r := timelineRowView{Name: c.Name, Y: 20 + timelineRow*float64(i), RenewX: -1, Expired: !c.NotAfter.IsZero() && now.After(c.NotAfter)}
		for _, seg := range versionsOf(c.CertStatus) {
			x0, x1 := a.x(seg.From), a.x(seg.To)
			title := "serial " + seg.Serial + ": " + clock(seg.From) + " to " + clock(seg.To)
			r.Segments = append(r.Segments, segView{X: x0, W: max(x1-x0, 1), Current: seg.Current, Title: title})
		}
		if c.ARI != nil && !c.ARI.Start.IsZero() {
			x0, x1 := a.x(c.ARI.Start), a.x(c.ARI.End)
			r.Window = &spanView{X: x0, W: max(x1-x0, 2)}
		}
		if !c.RenewAt.IsZero() {
			r.RenewX, r.RenewWhy = a.x(c.RenewAt), string(c.RenewSource)+" at "+clock(c.RenewAt)
		}
		for _, e := range c.History {
			if e.Kind == acme.EventOrderFailed || e.Kind == acme.EventReloadFailed || e.Kind == acme.EventWriteFailed {
				r.Failures = append(r.Failures, markView{X: a.x(e.At), Title: string(e.Kind) + " at " + clock(e.At) + ": " + e.Detail})
			}
		}
		tv.Rows = append(tv.Rows, r)
	}
	tv.Ticks = ticks(a)
	return tv
}

// ticks are the axis's labels: about six, on whole days (or hours for a
// span under two days).
func ticks(a axis) []tickView {
	span := a.To.Sub(a.From)
	step := 24 * time.Hour
	for _, s := range []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 30 * 24 * time.Hour, 60 * 24 * time.Hour} {
		if step = s; span/s <= 8 {
			break
		}
	}
	layout := "Jan 2"
	if step < 24*time.Hour {
		layout = "Jan 2 15:04"
	}
	t := a.From.Local().Truncate(step)
	if step >= 24*time.Hour {
		y, m, d := a.From.Local().Date()
		t = time.Date(y, m, d, 0, 0, 0, 0, time.Local)
	}
	var out []tickView
	for ; !t.After(a.To); t = t.Add(step) {
		if t.Before(a.From) {
			continue
		}
		out = append(out, tickView{X: a.x(t), Label: t.Format(layout)})
	}
	return slices.Clip(out)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
