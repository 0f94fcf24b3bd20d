// Command testapp is a stand-in application for the e2e tests and the local
// demo: an HTTP server that says who it is. Run as `testapp dump-env FILE`
// it writes its EDGECERT_* and RENEWED_* environment to FILE and exits: a
// deploy hook.
// Run as `testapp sleep SECONDS` it sleeps: a config test that hangs.
// Run as `testapp files DIR` it serves DIR on :8080 (HTTP-01 tokens behind
// a proxy that serves no files itself, as HAProxy).
package main

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "sleep" {
		n, _ := strconv.Atoi(os.Args[2])
		time.Sleep(time.Duration(n) * time.Second)
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "files" {
		srv := &http.Server{Addr: ":8080", Handler: http.FileServer(http.Dir(os.Args[2])), ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	}
	if len(os.Args) == 3 && os.Args[1] == "dump-env" {
		var lines []string
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "EDGECERT_") || strings.HasPrefix(kv, "RENEWED_") {
				lines = append(lines, kv)
			}
		}
		sort.Strings(lines)
		if err := os.WriteFile(os.Args[2], []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	name := os.Getenv("APP_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	srv := &http.Server{Addr: ":8080", ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
