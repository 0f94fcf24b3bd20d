package signal

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// LibpodTop asks Podman's own top for host PIDs and command lines, and
// names the PID column as Docker's top does, so that the proof reads it
// as it reads Docker's.
func TestLibpodTop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "podman.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked string
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path + "?" + r.URL.RawQuery
		if r.URL.Path != "/v4.0.0/libpod/containers/nginx/top" {
			http.Error(w, "no such path", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte(`{"Processes":[["12670","nginx: master process nginx -g daemon off;"],["12680","nginx: worker process"]],"Titles":["HPID","COMMAND"]}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c, err := client.NewClientWithOpts(client.WithHost("unix://" + sock))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	top, err := LibpodTop(c)(ctx, "nginx")
	if err != nil {
		t.Fatalf("LibpodTop: %v (asked %s)", err, asked)
	}
	if asked != "/v4.0.0/libpod/containers/nginx/top?ps_args=hpid,args" {
		t.Errorf("asked %s; want Podman's top with hpid,args", asked)
	}
	if !slices.Equal(top.Titles, []string{"PID", "COMMAND"}) || len(top.Processes) != 2 || top.Processes[1][0] != "12680" {
		t.Errorf("top = %+v; want PID and COMMAND columns with host PIDs", top)
	}
	if _, err := LibpodTop(c)(ctx, "gone"); err == nil {
		t.Error("a 404 from Podman gave no error")
	}
}
