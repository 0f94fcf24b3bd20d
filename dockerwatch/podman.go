package dockerwatch

import (
	"context"
	"slices"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Podman's Docker-compatible API (4.x), where its event stream differs from
// Docker's, and what the watcher does about each difference:
//
//   - It sends the stream's response headers only with the first event
//     (podman#7263, again #23712), and the Docker client returns only once
//     it has them: on a quiet host the stream would never open. The stream
//     is opened without waiting for them; the list that follows, and the
//     next ones, are the truth meanwhile.
//   - Its event filter does not match "die" (it records "died", podman
//     #10168), repeated filters are ANDed (#10507) and a label filter with
//     a key and no value matches nothing (#26702): the stream is filtered
//     on the container type only, and the actions here.
//   - It names some actions otherwise: "died" for Docker's "die" in some
//     versions, "remove" for "destroy". They are read as Docker's.
//   - It answers no past container event for a since/until query: the
//     stream check is skipped and the periodic full list is the check.

// podmanActions maps Podman's action names to Docker's.
var podmanActions = map[events.Action]events.Action{"died": events.ActionDie, "remove": events.ActionDestroy}

// watched are the container actions the watcher lists again for.
var watched = []events.Action{events.ActionStart, events.ActionDie, events.ActionStop,
	events.ActionDestroy, events.ActionRename, events.ActionRestart, events.ActionUnPause, events.ActionPause}

// relevant says whether m is an event the watcher follows, after naming its
// action as Docker does. On Docker the engine filtered already.
func (w *Watcher) relevant(m *events.Message) bool {
	if !w.cfg.Podman {
		return true
	}
	if a, ok := podmanActions[m.Action]; ok {
		m.Action = a
	}
	return m.Type == events.ContainerEventType && slices.Contains(watched, m.Action)
}

// subscribePodman opens the event stream without waiting for its headers;
// its messages and errors are passed on as they come. cancel ends it.
func (w *Watcher) subscribePodman(ctx context.Context, cancel context.CancelFunc) (<-chan events.Message, <-chan error, error) {
	msgs := make(chan events.Message)
	errs := make(chan error, 1)
	go func() {
		defer cancel()
		m, e := w.api.Events(ctx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))})
		for {
			select {
			case msg := <-m:
				select {
				case msgs <- msg:
				case <-ctx.Done():
					return
				}
			case err := <-e:
				errs <- err
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs, errs, nil
}
