package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgecert/edgecert/acme"
)

// The status page: a read-only view of the status document for people
// without a shell on the host, on its own listener (EDGECERT_STATUS_ADDR).
// Every page renders fully on the server (JavaScript off, it is all
// there); a small script follows /events and swaps in the page's new main
// part when the document changes. Nothing on it acts: no form posts, no
// button changes anything.

//go:embed web
var webFS embed.FS

// pageCSP allows nothing from outside and nothing inline: the one script
// and the one stylesheet come from the page's own origin.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// pageStreams bounds the open /events streams: each compares the document
// every pagePoll.
const (
	pageStreams = 32
	pagePoll    = 500 * time.Millisecond
	pagePing    = 15 * time.Second
)

// pageSource is what the page reads from the daemon.
type pageSource interface {
	status() StatusDoc
	versions(name string) ([]*acme.Info, error)
}

type statusPage struct {
	src     pageSource
	red     *redactor
	auth    *htpasswd // nil: no authentication
	now     func() time.Time
	tmpl    *template.Template
	streams atomic.Int32
	log     *slog.Logger

	fpMu sync.Mutex // the document's digest, shared by the open streams
	fpAt time.Time
	fp   string
}

func newStatusPage(src pageSource, red *redactor, auth *htpasswd, log *slog.Logger) (*statusPage, error) {
	tmpl, err := template.New("page").Funcs(template.FuncMap{
		"f1":  func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
		"add": func(a, b float64) float64 { return a + b },
		"plural": func(n int, what string) string {
			if n == 1 {
				return "1 " + what
			}
			return strconv.Itoa(n) + " " + what + "s"
		},
	}).ParseFS(webFS, "web/*.html")
	if err != nil {
		return nil, fmt.Errorf("status page templates: %w", err)
	}
	return &statusPage{src: src, red: red, auth: auth, now: time.Now, tmpl: tmpl, log: log}, nil
}

// handler routes the page's addresses; the event streams end with ctx.
func (p *statusPage) handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(static)
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /cert/{name}", p.cert)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) { writeStatus(w, p.red, p.src.status()) })
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) { p.events(ctx, w, r) })
	mux.Handle("GET /page.css", files)
	mux.Handle("GET /page.js", files)
	return p.guard(mux)
}

// guard sets the headers every answer carries and asks for the password
// when the page has one.
func (p *statusPage) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		if p.auth != nil {
			user, pass, ok := r.BasicAuth()
			if !ok || !p.auth.check(user, pass) {
				h.Set("WWW-Authenticate", `Basic realm="edgecert", charset="UTF-8"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// doc is the status document with the redaction applied to every string,
// as `status --json` shows it: the page's strings come from here only.
func (p *statusPage) doc() StatusDoc {
	doc := p.src.status()
	b, err := json.Marshal(doc)
	if err != nil {
		return StatusDoc{Version: version}
	}
	var out StatusDoc
	if err := json.Unmarshal([]byte(p.red.String(string(b))), &out); err != nil {
		return StatusDoc{Version: version}
	}
	return out
}

func queryOf(r *http.Request) pageQuery {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	sort := q.Get("sort")
	switch sort {
	case "expiry", "renewal", "name", "state":
	default:
		sort = ""
	}
	return pageQuery{Filter: q.Get("q"), Sort: sort, Page: page}
}

// index is the overview; with ?part=main only its main part, which the
// script swaps in.
func (p *statusPage) index(w http.ResponseWriter, r *http.Request) {
	v := buildPage(p.doc(), queryOf(r), p.now())
	name := "index.html"
	if r.URL.Query().Get("part") == "main" {
		name = "main"
	}
	p.render(w, name, v)
}

// cert is one certificate's page: its history and its versions on the
// volume beside what the overview shows.
func (p *statusPage) cert(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	doc := p.doc()
	now := p.now()
	for _, c := range doc.Certificates {
		if c.Name != name {
			continue
		}
		row := rowOf(c, now)
		if vs, err := p.src.versions(name); err == nil {
			for _, v := range vs {
				row.Versions = append(row.Versions, versionRow{Version: v.Version, Serial: v.Serial,
					NotAfter: clock(v.NotAfter), Written: clock(v.Written), Current: v.Serial == c.Serial})
			}
		}
		view := struct {
			Now     string
			Version string
			Cert    certRow
		}{clock(now), doc.Version, row}
		tmpl := "cert.html"
		if r.URL.Query().Get("part") == "main" {
			tmpl = "certmain"
		}
		p.render(w, tmpl, view)
		return
	}
	http.Error(w, "no certificate named "+strconv.Quote(name), http.StatusNotFound)
}

func (p *statusPage) render(w http.ResponseWriter, name string, v any) {
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, name, v); err != nil {
		p.log.Error("status page not rendered", "err", err)
		http.Error(w, "the page could not be rendered; see edgecert's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// events tells an open page when the document changed (a server-sent
// event "change"), so that it fetches its main part again; a comment every
// pagePing keeps proxies between from closing the stream.
func (p *statusPage) events(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if p.streams.Add(1) > pageStreams {
		p.streams.Add(-1)
		http.Error(w, "too many open status pages", http.StatusServiceUnavailable)
		return
	}
	defer p.streams.Add(-1)
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	last := p.fingerprint() // before the stream opens: a change after it is told
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx in front: pass events at once
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()
	tick := time.NewTicker(pagePoll)
	defer tick.Stop()
	pinged := time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var err error
		if fp := p.fingerprint(); fp != last {
			last = fp
			_, err = fmt.Fprintf(w, "event: change\ndata: %s\n\n", fp[:16])
		} else if time.Since(pinged) >= pagePing {
			pinged = time.Now()
			_, err = fmt.Fprint(w, ": ping\n\n")
		} else {
			continue
		}
		if err != nil {
			return
		}
		flusher.Flush()
	}
}

// fingerprint is a digest of the status document: it changes when anything
// shown changes. The open streams share one digest per poll.
func (p *statusPage) fingerprint() string {
	p.fpMu.Lock()
	defer p.fpMu.Unlock()
	if time.Since(p.fpAt) < pagePoll/2 {
		return p.fp
	}
	sum := sha256.New()
	_ = json.NewEncoder(sum).Encode(p.src.status())
	p.fp, p.fpAt = fmt.Sprintf("%x", sum.Sum(nil)), time.Now()
	return p.fp
}

// serve answers the page on addr until ctx ends.
func (p *statusPage) serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("status page: %w", err)
	}
	return serveUntil(ctx, ln, p.handler(ctx), "status page")
}
