package dockerwatch

import (
	"strconv"

	"context"
	"github.com/docker/docker/api/types/container"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
)

// On Podman the event stream opens only with its first event: the watcher
// lists and publishes at once anyway, takes Podman's action names for
// Docker's, and lists again for them.
func TestWatcherOnPodman(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 4), podman: make(chan events.Message)}
	f.set(summary("a", "a.example.com"))
	w := New(f, Config{Rules: testRules, Podman: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	if d := next(t, w); len(d.Certs) != 1 {
		t.Fatalf("first snapshot = %+v before any event; want a.example.com", d)
	}
	if h := w.Health(); !h.Connected {
		t.Errorf("health %+v while the stream waits for its first event; want connected", h)
	}

	first := f.podman
	var s stream
	relists := 0
	for i, tc := range []struct {
		desc   string
		action events.Action
	}{
		{desc: "Podman's remove is Docker's destroy", action: "remove"},
		{desc: "Podman's died is Docker's die", action: "died"},
		{desc: "a start", action: events.ActionStart},
	} {
		// Each event comes with a change the next list shows.
		relists++
		want := 1 + relists
		list := []container.Summary{summary("a", "a.example.com")}
		for k := range relists {
			list = append(list, summary("n"+strconv.Itoa(k), "n"+strconv.Itoa(k)+".example.com"))
		}
		f.set(list...)
		msg := events.Message{Type: events.ContainerEventType, Action: tc.action, Actor: events.Actor{ID: "a"}, TimeNano: time.Now().UnixNano()}
		if i == 0 { // the stream's first event opens it
			first <- msg
			s = <-f.streams
		} else {
			s.msgs <- msg
		}
		if d := next(t, w); len(d.Certs) != want {
			t.Fatalf("%s: snapshot of %d certificates (%+v), want %d", tc.desc, len(d.Certs), d.Certs, want)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not stop")
	}
}

func TestPodmanEventsRelevant(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		podman bool
		msg    events.Message
		want   bool
		action events.Action
	}{
		{desc: "remove is destroy", podman: true, msg: events.Message{Type: "container", Action: "remove"}, want: true, action: events.ActionDestroy},
		{desc: "died is die", podman: true, msg: events.Message{Type: "container", Action: "died"}, want: true, action: events.ActionDie},
		{desc: "die stays die", podman: true, msg: events.Message{Type: "container", Action: "die"}, want: true, action: events.ActionDie},
		{desc: "an exec's end (edgecert's own config tests) is not followed", podman: true, msg: events.Message{Type: "container", Action: "exec_died"}, want: false, action: "exec_died"},
		{desc: "a health check is not followed", podman: true, msg: events.Message{Type: "container", Action: "health_status"}, want: false, action: "health_status"},
		{desc: "an image's remove is not a container's", podman: true, msg: events.Message{Type: "image", Action: "remove"}, want: false, action: events.ActionDestroy},
		{desc: "Docker: the engine filtered already", podman: false, msg: events.Message{Type: "container", Action: "remove"}, want: true, action: "remove"},
	} {
		w := &Watcher{cfg: Config{Podman: tc.podman}}
		m := tc.msg
		if got := w.relevant(&m); got != tc.want || m.Action != tc.action {
			t.Errorf("%s: relevant = %v, action %q; want %v, %q", tc.desc, got, m.Action, tc.want, tc.action)
		}
	}
}
