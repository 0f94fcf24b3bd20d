package acme

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func TestRenewalTime(t *testing.T) {
	tests := []struct {
		desc     string
		life     time.Duration
		ari      *ARIWindow
		wantAt   time.Duration // after notBefore
		wantFrom Source
	}{
		{desc: "90 days, no ARI: a third left", life: 90 * day, wantAt: 60 * day, wantFrom: SourceRatio},
		{desc: "45 days, no ARI: a third left", life: 45 * day, wantAt: 30 * day, wantFrom: SourceRatio},
		{desc: "6 days, no ARI: half left", life: 6 * day, wantAt: 3 * day, wantFrom: SourceRatio},
		{desc: "ARI choice wins over the ratio", life: 90 * day, ari: &ARIWindow{Chosen: t0.Add(40 * day)}, wantAt: 40 * day, wantFrom: SourceARI},
		{desc: "ARI later than the ratio is still followed", life: 90 * day, ari: &ARIWindow{Chosen: t0.Add(70 * day)}, wantAt: 70 * day, wantFrom: SourceARI},
		{desc: "ARI past the 1/20 threshold: emergency", life: 100 * day, ari: &ARIWindow{Chosen: t0.Add(99 * day)}, wantAt: 95 * day, wantFrom: SourceEmergency},
		{desc: "an empty ARI answer falls back to the ratio", life: 90 * day, ari: &ARIWindow{}, wantAt: 60 * day, wantFrom: SourceRatio},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			at, src := renewalTime(t0, t0.Add(tc.life), tc.ari)
			if !at.Equal(t0.Add(tc.wantAt)) || src != tc.wantFrom {
				t.Errorf("renewalTime = %v (%s), want %v (%s)", at.Sub(t0), src, tc.wantAt, tc.wantFrom)
			}
		})
	}
}

func TestChooseInWindow(t *testing.T) {
	nb, na := t0, t0.Add(90*day)
	start, end := t0.Add(59*day), t0.Add(61*day)
	lowest := func(n int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	if got := chooseInWindow(nil, start, end, nb, na, lowest); !got.Equal(start) {
		t.Errorf("lowest pick = %v, want the window start", got)
	}
	if got := chooseInWindow(nil, start, end, nb, na, highest); !got.Before(end) || got.Before(end.Add(-time.Second)) {
		t.Errorf("highest pick = %v, want just before the window end %v", got, end)
	}
	// The same window keeps its choice across polls; a new window picks again.
	prev := &ARIWindow{Start: start, End: end, Chosen: start.Add(time.Hour)}
	if got := chooseInWindow(prev, start, end, nb, na, highest); !got.Equal(prev.Chosen) {
		t.Errorf("unchanged window re-picked: %v", got)
	}
	if got := chooseInWindow(prev, start.Add(-day), end, nb, na, lowest); !got.Equal(start.Add(-day)) {
		t.Errorf("moved window kept the old pick: %v", got)
	}
	// A window reaching to expiry (as Pebble's for short certificates) is
	// picked only up to 9/10 of a long lifetime, half of a short one.
	if got := chooseInWindow(nil, nb, na, nb, na, highest); got.After(t0.Add(81 * day)) {
		t.Errorf("pick in a whole 90-day window = %v, want no later than day 81", got.Sub(t0))
	}
	snb, sna := t0, t0.Add(120*time.Second)
	if got := chooseInWindow(nil, snb, sna, snb, sna, highest); got.After(t0.Add(60 * time.Second)) {
		t.Errorf("pick in a whole 2-minute window = %v, want no later than 60s", got.Sub(t0))
	}
	// A window that ends before the cap is used whole.
	if got := chooseInWindow(nil, snb, snb.Add(30*time.Second), snb, sna, highest); !got.After(snb.Add(29 * time.Second)) {
		t.Errorf("pick in an early window = %v, want its end", got.Sub(t0))
	}
}

func TestNextARIPoll(t *testing.T) {
	tests := []struct {
		desc       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{desc: "no Retry-After: twice a day", retryAfter: 0, want: 12 * time.Hour},
		{desc: "Retry-After honoured", retryAfter: 6 * time.Hour, want: 6 * time.Hour},
		{desc: "too short: a minute", retryAfter: time.Second, want: time.Minute},
		{desc: "too long: a day", retryAfter: 7 * day, want: day},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := nextARIPoll(t0, tc.retryAfter); !got.Equal(t0.Add(tc.want)) {
				t.Errorf("nextARIPoll = %v, want %v", got.Sub(t0), tc.want)
			}
		})
	}
}

func TestRetryAt(t *testing.T) {
	mid := func() float64 { return 0.5 } // no jitter
	tests := []struct {
		desc       string
		failures   int
		retryAfter time.Duration
		permanent  bool
		want       time.Duration
	}{
		{desc: "first failure", failures: 1, want: time.Minute},
		{desc: "second", failures: 2, want: 10 * time.Minute},
		{desc: "third", failures: 3, want: 100 * time.Minute},
		{desc: "fourth: daily", failures: 4, want: day},
		{desc: "tenth: still daily", failures: 10, want: day},
		{desc: "Retry-After wins", failures: 1, retryAfter: 3 * time.Hour, want: 3 * time.Hour},
		{desc: "Retry-After of seconds: at least a minute", failures: 3, retryAfter: 5 * time.Second, want: time.Minute},
		{desc: "permanent: a day", failures: 1, permanent: true, want: day},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := retryAt(t0, tc.failures, tc.retryAfter, tc.permanent, mid); !got.Equal(t0.Add(tc.want)) {
				t.Errorf("retryAt = %v, want %v", got.Sub(t0), tc.want)
			}
		})
	}
	// Jitter stays within ±10%.
	lo, hi := retryAt(t0, 2, 0, false, func() float64 { return 0 }), retryAt(t0, 2, 0, false, func() float64 { return 0.999 })
	if lo.Sub(t0) != 9*time.Minute || hi.Sub(t0) < 10*time.Minute+59*time.Second || hi.Sub(t0) > 11*time.Minute {
		t.Errorf("jitter range = [%v, %v], want [9m, 11m)", lo.Sub(t0), hi.Sub(t0))
	}
}

func TestRetrySteps(t *testing.T) {
	mid := func() float64 { return 0.5 } // no jitter
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		desc              string
		failures          int
		config, notPlaced bool
		want              time.Duration
	}{
		{desc: "the CA refused: a minute", failures: 1, want: time.Minute},
		{desc: "the CA refused, fourth time: daily", failures: 4, want: 24 * time.Hour},
		{desc: "credentials refused: 10 minutes first", failures: 1, config: true, want: 10 * time.Minute},
		{desc: "credentials refused, third time: daily", failures: 3, config: true, want: 24 * time.Hour},
		{desc: "a record missing, nothing asked of the CA: 10 minutes", failures: 1, config: true, notPlaced: true, want: 10 * time.Minute},
		{desc: "a record missing for days: still 10 minutes", failures: 40, config: true, notPlaced: true, want: 10 * time.Minute},
	} {
		if got := retryAt(now, retrySteps(tc.failures, tc.config, tc.notPlaced), 0, false, mid).Sub(now); got != tc.want {
			t.Errorf("%s: retry in %s, want %s", tc.desc, got, tc.want)
		}
	}
}
