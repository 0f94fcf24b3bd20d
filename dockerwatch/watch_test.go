package dockerwatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// fakeEngine serves a container list that the test changes, and event
// streams that the test feeds or breaks.
type fakeEngine struct {
	mu      sync.Mutex
	list    []container.Summary
	lists   int
	streams chan stream
}

type stream struct {
	msgs chan events.Message
	errs chan error
}

func (f *fakeEngine) ContainerList(ctx context.Context, _ container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return append([]container.Summary(nil), f.list...), nil
}

func (f *fakeEngine) Events(ctx context.Context, _ events.ListOptions) (<-chan events.Message, <-chan error) {
	s := stream{make(chan events.Message), make(chan error, 1)}
	f.streams <- s
	return s.msgs, s.errs
}

func (f *fakeEngine) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return container.InspectResponse{Config: &container.Config{Env: []string{"PATH=/bin"}}}, nil
}

func (f *fakeEngine) set(l ...container.Summary) {
	f.mu.Lock()
	f.list = l
	f.mu.Unlock()
}

func summary(id, domains string) container.Summary {
	return container.Summary{ID: id, Names: []string{"/" + id}, State: container.StateRunning, Labels: map[string]string{"edgecert.domains": domains}}
}

func proxySummary(id string) container.Summary {
	return container.Summary{ID: id, Names: []string{"/" + id}, State: container.StateRunning, Labels: map[string]string{"edgecert.nginx": "true"}}
}

func next(t *testing.T, w *Watcher) Desired {
	t.Helper()
	select {
	case d := <-w.Snapshots():
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot within 5s")
		return Desired{}
	}
}

func TestWatcherListsOnConnectAndRelistsOnEvents(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 4)}
	f.set(summary("a", "a.example.com"))
	w := New(f, Config{Rules: testRules, Debounce: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	s := <-f.streams
	if d := next(t, w); len(d.Certs) != 1 || d.Certs[0].Name != "a.example.com" {
		t.Fatalf("first snapshot = %+v, want a.example.com", d)
	}

	// A burst of events yields one relist, with the new truth.
	f.set(summary("a", "a.example.com"), summary("b", "b.example.com"))
	for range 5 {
		s.msgs <- events.Message{Action: events.ActionStart}
	}
	if d := next(t, w); len(d.Certs) != 2 {
		t.Fatalf("after events: %+v, want 2 certificates", d)
	}

	// A restart between two lists (die and start inside one debounce) is
	// still seen: the proxy's start count changes.
	f.set(summary("a", "a.example.com"), summary("b", "b.example.com"), proxySummary("px"))
	s.msgs <- events.Message{Action: events.ActionStart, Actor: events.Actor{ID: "px"}}
	d1 := next(t, w)
	s.msgs <- events.Message{Action: events.ActionDie, Actor: events.Actor{ID: "px"}}
	s.msgs <- events.Message{Action: events.ActionStart, Actor: events.Actor{ID: "px"}}
	d2 := next(t, w)
	if len(d1.Proxies) != 1 || len(d2.Proxies) != 1 || d2.Proxies[0].Starts == d1.Proxies[0].Starts {
		t.Fatalf("proxies %+v then %+v: want the restart to change the start count", d1.Proxies, d2.Proxies)
	}

	// A broken stream reconnects and lists again, even with no event.
	f.set(summary("b", "b.example.com"))
	s.errs <- errors.New("connection reset")
	<-f.streams
	if d := next(t, w); len(d.Certs) != 1 || d.Certs[0].Name != "b.example.com" {
		t.Fatalf("after reconnect: %+v, want only b.example.com", d)
	}
	if h := w.Health(); h.Reconnects != 1 || !h.Connected {
		t.Errorf("health = %+v, want 1 reconnect and connected", h)
	}
	f.mu.Lock()
	if f.lists != 5 {
		t.Errorf("lists = %d, want 5 (connect, three debounced relists, reconnect)", f.lists)
	}
	f.mu.Unlock()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
}
