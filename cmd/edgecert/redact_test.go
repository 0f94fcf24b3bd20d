package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestRedactorRule(t *testing.T) {
	r := newRedactor([]string{"tok-3f9a2c1b", `pa"ss\word`, "RAW", "/services/T00/B00/XXXXSECRET"})
	for _, tc := range []struct {
		desc, in, want string
	}{
		{desc: "a secret anywhere", in: "present: 403 for token tok-3f9a2c1b", want: "present: 403 for token [redacted]"},
		{desc: "a secret JSON-escaped", in: `{"error":"pa\"ss\\word rejected"}`, want: `{"error":"[redacted] rejected"}`},
		{desc: "a short value is not a secret", in: "mode RAW", want: "mode RAW"},
		{desc: "a URL's query", in: `Get "https://www.duckdns.org/update?domains=x&token=abc": EOF`, want: `Get "https://www.duckdns.org/update?[redacted]": EOF`},
		{desc: "a URL's userinfo", in: "dial https://user:pw@etcd1:2379/v3", want: "dial https://[redacted]@etcd1:2379/v3"},
		{desc: "a webhook's token path", in: "POST https://hooks.slack.com/services/T00/B00/XXXXSECRET: 500", want: "POST https://hooks.slack.com[redacted]: 500"},
		{desc: "a URL with nothing secret", in: "https://acme-v02.api.letsencrypt.org/directory", want: "https://acme-v02.api.letsencrypt.org/directory"},
		{desc: "no URL", in: "nginx: [emerg] cannot load certificate", want: "nginx: [emerg] cannot load certificate"},
	} {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.desc, got, tc.want)
		}
	}
	var zero *redactor
	if got := zero.String("https://u:p@h/x?q=1"); got != "https://[redacted]@h/x?[redacted]" {
		t.Errorf("the nil redactor: %q", got)
	}
}

// Every variable of a configured DNS provider that holds a secret (and its
// _FILE form), and edgecert's own secrets, are known to the rule.
func TestConfigSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("duck-from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HTTPREQ_PASSWORD", "httpreq-password")
	t.Setenv("DUCKDNS_TOKEN_FILE", file)
	t.Setenv("EXEC_API_TOKEN", "exec-api-token")
	t.Setenv("EXEC_PATH", "/hook.sh")
	cfg := Config{ClusterSecret: "the-cluster-secret", EtcdPassword: "etcd-password", SMTPPass: "smtp-password", EABHMAC: "eab-hmac-key",
		SlackHooks: []string{"https://hooks.slack.com/services/T/B/slacktoken"}, DNSProviders: []string{"httpreq", "duckdns", "exec"}}
	r := redactorFor(cfg)
	in := "the-cluster-secret etcd-password smtp-password eab-hmac-key httpreq-password duck-from-a-file exec-api-token /services/T/B/slacktoken /hook.sh"
	if got := r.String(in); strings.Count(got, redacted) != 8 || !strings.HasSuffix(got, " /hook.sh") {
		t.Errorf("redacted: %q", got)
	}
}

// The log handler: messages, strings, errors, groups and lists.
func TestRedactingLogHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(redactingHandler{next: slog.NewJSONHandler(&b, nil), r: newRedactor([]string{"s3cr3t-value"})})
	log.With("endpoint", "https://u:s3cr3t-value@api/x?k=s3cr3t-value").Error("order failed: s3cr3t-value",
		"err", errors.New("GET https://api/x?token=abc: 401"), "domains", []string{"s3cr3t-value.example"},
		slog.Group("g", "inner", "s3cr3t-value"))
	out := b.String()
	if strings.Contains(out, "s3cr3t-value") || strings.Contains(out, "token=abc") || strings.Count(out, redacted) < 5 {
		t.Errorf("log line: %s", out)
	}
}

// The control socket's answers (status, renew) go through the rule.
func TestControlAnswersAreRedacted(t *testing.T) {
	doc := sampleDoc()
	doc.Certificates[1].LastError = `DNS provider: httpreq: GET "https://dns.example/present?token=t0ps3cr3t": 500 for key k3y-s3cr3t`
	w := httptest.NewRecorder()
	writeJSON(w, newRedactor([]string{"k3y-s3cr3t"}), 200, StatusDoc{Certificates: doc.Certificates})
	if body := w.Body.String(); strings.Contains(body, "t0ps3cr3t") || strings.Contains(body, "k3y-s3cr3t") || !json.Valid([]byte(body)) {
		t.Errorf("status answer: %s", body)
	}
}

// A notice (webhook body, Slack text, mail) goes through the rule.
func TestNoticesAreRedacted(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(httpHandlerFunc(func(body string) { got <- body }))
	defer srv.Close()
	n := newNotifier(notifyConfig{Webhooks: []string{srv.URL + "/hook"}, Redact: newRedactor([]string{"n0tice-s3cret"})}, t.TempDir(), quietLog())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.send(ctx, Notice{Event: "order_failed", Cert: "site", Error: "401 for n0tice-s3cret at https://api/x?token=abc", Text: "site: n0tice-s3cret"})
	select {
	case body := <-got:
		if strings.Contains(body, "n0tice-s3cret") || strings.Contains(body, "token=abc") || !strings.Contains(body, redacted) {
			t.Errorf("webhook body: %s", body)
		}
	case <-ctx.Done():
		t.Fatal("no notice")
	}
}

// httpHandlerFunc hands each request's body to f.
func httpHandlerFunc(f func(body string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f(string(b))
	}
}

// A URL anywhere in the environment (a DNS provider's endpoint, say) gives
// its password and query to the rule, whole and value by value: an API that
// answers with the request it got puts them where no URL is left.
func TestURLSecretsInTheEnvironment(t *testing.T) {
	t.Setenv("HTTPREQ_ENDPOINT", "https://api.example.test/dns?token=endpoint-token-1&format=json")
	t.Setenv("SOME_HOOKS", "https://a.example.test/x?key=first-key-22, https://user:pass%2Fword9@b.example.test/")
	r := redactorFor(Config{})
	for in, want := range map[string]string{
		"refused /dns/present?token=endpoint-token-1&format=json": "refused /dns/present?" + redacted,
		"token endpoint-token-1 not valid":                        "token " + redacted + " not valid",
		"sent key=first-key-22":                                   "sent " + redacted, // the whole query
		"login pass/word9 refused, pass%2Fword9":                  "login " + redacted + " refused, " + redacted,
		"format json, user admin":                                 "format json, user admin", // short values and user names stay
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

// The URL scanner redacts as the regular expression it replaced did on
// text as edgecert writes it (logs, JSON, errors), and on random bytes
// around URL fragments leaves nothing the expression would still redact
// (the expression saw no URL after "_" or a digit, nor one inside
// another's path; the scanner redacts those too).
func TestRedactURLsAsTheExpressionDid(t *testing.T) {
	re := regexp.MustCompile(`\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s"'<>/?#@\\]*@)?([^\s"'<>/?#\\]*)([^\s"'<>?#\\]*)(\?[^\s"'<>#\\]*)?`)
	byExpression := func(s string) string {
		return re.ReplaceAllStringFunc(s, func(u string) string {
			m := re.FindStringSubmatch(u)
			out := m[1]
			if m[2] != "" {
				out += redacted + "@"
			}
			out += m[3] + m[4]
			if m[5] != "" {
				out += "?" + redacted
			}
			return out
		})
	}
	for _, s := range []string{
		"", "no url here", "://", "a://", "1://x?y", "GET https://api.example.test/v1/zones?token=abc&x=1 failed",
		`{"error":"https://user:pw@host.test:8443/p/a/t/h?q=1#frag"}`, `"url":"http://h/?a=b\"x"`,
		"two: ftp://a@b/c?d and https://e/f?g=h<br>", "git+ssh://git@github.com/x.git?ref=1", "http://host?only",
		"text\thttps://t.test/x?y\nmore", "http://a'b?c", `https://x.test/\u0026?q`, "xhttps://y/?z",
	} {
		if got, want := redactURLs(s), byExpression(s); got != want {
			t.Errorf("redactURLs(%q) = %q, the expression gave %q", s, got, want)
		}
	}
	fragments := []string{"https://", "http://", "?", "@", "/", "#", " ", "\"", "\\", "a", "Z9", "user:pw", ".", "-", "<", "=", "&", "\t", "_", "9"}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		var b strings.Builder
		for range 1 + rnd.IntN(12) {
			b.WriteString(fragments[rnd.IntN(len(fragments))])
		}
		s := b.String()
		if got := redactURLs(s); byExpression(got) != got {
			t.Fatalf("redactURLs(%q) = %q, in which the expression still redacts: %q", s, got, byExpression(got))
		}
	}
}

// A URL inside another's path keeps its password out too.
func TestRedactURLsNested(t *testing.T) {
	in := "GET http://relay.test/fetch/https://user:pw@origin.test/x?k=v failed"
	want := "GET http://relay.test/fetch/https://" + redacted + "@origin.test/x?" + redacted + " failed"
	if got := redactURLs(in); got != want {
		t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
	}
}
