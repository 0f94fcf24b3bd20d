package dockerwatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// fakeEngine serves a container list that the test changes, and event
// streams that the test feeds or breaks.
type fakeEngine struct {
	mu       sync.Mutex
	list     []container.Summary
	lists    int
	streams  chan stream
	hangList bool             // lists never answer (until their context ends)
	hold     bool             // /events requests get no answer, as the real client sees it: Events blocks
	record   []events.Message // what the engine reports to an events query with until
	queries  int
	gate     chan struct{} // when set, each list waits for a token
	waiting  int           // lists that came to the gate
	buffer   int           // the event stream's buffer
	// podman: as Podman 4's compatible API, the stream's Events call
	// returns only with its first event (the headers come with it); it
	// takes that event from this channel.
	podman chan events.Message
}

type stream struct {
	msgs chan events.Message
	errs chan error
}

func (f *fakeEngine) ContainerList(ctx context.Context, _ container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	hang := f.hangList
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.gate != nil {
		f.mu.Lock()
		f.waiting++
		f.mu.Unlock()
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return append([]container.Summary(nil), f.list...), nil
}

func (f *fakeEngine) Events(ctx context.Context, o events.ListOptions) (<-chan events.Message, <-chan error) {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold {
		<-ctx.Done()
		errs := make(chan error, 1)
		errs <- ctx.Err()
		return nil, errs
	}
	if o.Until != "" { // a query of the past: the record, then the end
		f.mu.Lock()
		f.queries++
		rec := append([]events.Message(nil), f.record...)
		f.mu.Unlock()
		msgs, errs := make(chan events.Message, len(rec)), make(chan error, 1)
		for _, m := range rec {
			msgs <- m
		}
		go func() {
			for len(msgs) > 0 {
				time.Sleep(time.Millisecond)
			}
			errs <- io.EOF
		}()
		return msgs, errs
	}
	s := stream{make(chan events.Message, f.buffer+1), make(chan error, 1)}
	if f.podman != nil {
		select {
		case m := <-f.podman:
			s.msgs <- m
		case <-ctx.Done():
			s.errs <- ctx.Err()
			return nil, s.errs
		}
	}
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

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// run starts w until the test ends.
func run(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatcherAHungListEndsTheSessionAndHealthSaysSo(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 8)}
	f.set(summary("a", "a.example.com"))
	w := New(f, Config{Rules: testRules, Debounce: 10 * time.Millisecond, Resync: 100 * time.Millisecond, Timeout: 200 * time.Millisecond}, quiet())
	run(t, w)
	next(t, w)
	if h := w.Health(); !h.Connected || h.Error != "" {
		t.Fatalf("health after the first list = %+v", h)
	}
	f.mu.Lock()
	f.hangList = true
	f.mu.Unlock()
	eventually(t, "health to turn red", func() bool { return w.Health().Error != "" })
	if h := w.Health(); h.Connected || !strings.Contains(h.Error, "list containers") {
		t.Fatalf("health with a hung list = %+v, want not connected, naming the list", h)
	}
	f.mu.Lock()
	f.hangList = false
	f.mu.Unlock()
	eventually(t, "health to turn green again", func() bool { h := w.Health(); return h.Connected && h.Error == "" })
}

func TestWatcherAHeldEventStreamIsNotConnected(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 8), hold: true}
	w := New(f, Config{Rules: testRules, Debounce: 10 * time.Millisecond, Timeout: 200 * time.Millisecond}, quiet())
	run(t, w)
	eventually(t, "the open timeout to be reported", func() bool {
		return strings.Contains(w.Health().Error, "did not open the event stream within 200ms")
	})
	f.mu.Lock()
	f.hold = false
	f.mu.Unlock()
	next(t, w)
	eventually(t, "connected", func() bool { return w.Health().Connected })
}

func TestWatcherNoticesAStalledStream(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 8)}
	f.set(summary("a", "a.example.com"))
	w := New(f, Config{Rules: testRules, Debounce: 10 * time.Millisecond, Resync: 100 * time.Millisecond, Timeout: time.Second}, quiet())
	run(t, w)
	<-f.streams
	next(t, w)
	// A quiet host: the checks find nothing missed, the session lives on.
	eventually(t, "two stream checks", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.queries >= 2 })
	if h := w.Health(); !h.Connected || h.Reconnects != 0 {
		t.Fatalf("health on a quiet host = %+v", h)
	}
	// The engine records an event the stream never delivered: a stall.
	f.set(summary("a", "a.example.com"), summary("b", "b.example.com"))
	f.mu.Lock()
	f.record = []events.Message{{Action: events.ActionStart, Actor: events.Actor{ID: "b"}, TimeNano: time.Now().UnixNano()}}
	f.mu.Unlock()
	eventually(t, "a reconnect", func() bool { return w.Health().Reconnects >= 1 })
	if h := w.Health(); !strings.Contains(w.lastErrForTest(), "stalled") {
		t.Fatalf("health after the stall = %+v, last error %q", h, w.lastErrForTest())
	}
}

func (w *Watcher) lastErrForTest() string { w.mu.Lock(); defer w.mu.Unlock(); return w.lastErr }

func TestWatcherListsAtOnceAndGathersWhatComesDuringAList(t *testing.T) {
	f := &fakeEngine{streams: make(chan stream, 4), gate: make(chan struct{}), buffer: 16}
	f.set(summary("a", "a.example.com"))
	w := New(f, Config{Rules: testRules}, quiet()) // no debounce: the default
	run(t, w)
	s := <-f.streams
	f.gate <- struct{}{}
	next(t, w)

	// One event: listed at once (the list comes to the gate).
	f.set(summary("a", "a.example.com"), summary("b", "b.example.com"))
	s.msgs <- events.Message{Action: events.ActionStart, Actor: events.Actor{ID: "b"}}
	eventually(t, "a list after one event", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.waiting == 2 })
	// Four more while that list runs...
	for _, id := range []string{"c", "d", "e", "f"} {
		s.msgs <- events.Message{Action: events.ActionStart, Actor: events.Actor{ID: id}}
	}
	f.gate <- struct{}{}
	if d := next(t, w); len(d.Certs) != 2 {
		t.Fatalf("after the first event: %+v, want 2 certificates", d)
	}
	// ...are gathered into one more list.
	f.gate <- struct{}{}
	next(t, w)
	select {
	case f.gate <- struct{}{}:
		t.Fatal("a third list after five events: the events that came during a list were not gathered")
	case <-time.After(200 * time.Millisecond):
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lists != 3 {
		t.Errorf("lists = %d, want 3 (connect, the first event, the four that came during it)", f.lists)
	}
}
