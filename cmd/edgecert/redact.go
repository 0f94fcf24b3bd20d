package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/edgecert/edgecert/acme/legoissuer"
)

// Secrets never leave the process. One rule, here, for every sink (logs,
// status, the state volume, notices, etcd): every secret edgecert knows is
// replaced by [redacted], and every URL keeps its scheme, host and path but
// never its userinfo or query.

const redacted = "[redacted]"

// minSecret is the shortest value redacted as a secret: shorter ones
// (a mode, a flag) would blank out ordinary words.
const minSecret = 6

// redactor applies the rule. Its zero value redacts URLs only.
type redactor struct {
	secrets *strings.Replacer
}

// newRedactor redacts each of secrets (and its JSON-escaped form) wherever
// it appears, longest first.
func newRedactor(secrets []string) *redactor {
	var forms []string
	for _, s := range secrets {
		if s = strings.TrimSpace(s); len(s) < minSecret {
			continue
		}
		forms = append(forms, s)
		if q, _ := json.Marshal(s); string(q[1:len(q)-1]) != s {
			forms = append(forms, string(q[1:len(q)-1]))
		}
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	forms = slices.Compact(forms)
	var pairs []string
	for _, f := range forms {
		pairs = append(pairs, f, redacted)
	}
	return &redactor{secrets: strings.NewReplacer(pairs...)}
}

// configSecrets are the secrets cfg holds: passwords, the cluster secret,
// the EAB key, the configured DNS providers' credentials, and the parts of
// the webhook URLs past their host (Slack's token is its path).
func configSecrets(cfg Config, dnsSecrets []string) []string {
	out := append([]string{cfg.ClusterSecret, cfg.PreviousSecret, cfg.EtcdPassword, cfg.SMTPPass, cfg.EABHMAC}, dnsSecrets...)
	for _, u := range slices.Concat(cfg.Webhooks, cfg.SlackHooks) {
		if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.Host != "" {
			if rest := strings.TrimPrefix(strings.TrimSpace(u), pu.Scheme+"://"+pu.Host); len(rest) > 1 {
				out = append(out, rest)
			}
		}
	}
	return out
}

// urlSecrets are the secrets in URLs among values: each one's password and
// query, whole and value by value (a DNS provider's endpoint with its token
// in the query, say). An API that answers with the request it got puts them
// in the error where no URL is left to recognise: "refused /present?token=...".
func urlSecrets(values []string) []string {
	var out []string
	for _, v := range values {
		if _, after, ok := strings.Cut(v, "="); ok && strings.Index(v, "=") < strings.Index(v+"://", "://") {
			v = after // an environment entry, NAME=value
		}
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) }) {
			u, err := url.Parse(f)
			if err != nil || u.Scheme == "" || u.Host == "" {
				continue
			}
			if p, ok := u.User.Password(); ok {
				out = append(out, p, url.QueryEscape(p))
			}
			if u.RawQuery == "" {
				continue
			}
			out = append(out, u.RawQuery)
			q, _ := url.ParseQuery(u.RawQuery)
			for _, vs := range q {
				for _, x := range vs {
					out = append(out, x, url.QueryEscape(x))
				}
			}
		}
	}
	return out
}

// redactorFor is the redactor of everything cfg configures, and of the
// secrets in URLs anywhere in the environment (DNS providers' endpoints).
func redactorFor(cfg Config) *redactor {
	return newRedactor(slices.Concat(configSecrets(cfg, legoissuer.DNSSecrets(cfg.DNSProviders)), urlSecrets(os.Environ())))
}

// String is s with the rule applied.
func (r *redactor) String(s string) string {
	if r != nil && r.secrets != nil {
		s = r.secrets.Replace(s)
	}
	return redactURLs(s)
}

// notice is nt with the rule applied to every text in it.
func (r *redactor) notice(nt Notice) Notice {
	b, err := json.Marshal(nt)
	if err != nil {
		return nt
	}
	var out Notice
	if json.Unmarshal([]byte(r.String(string(b))), &out) != nil {
		return Notice{Cert: nt.Cert, Event: nt.Event, Text: redacted}
	}
	return out
}

// redactURLs drops the userinfo and query of every URL in s: a scheme
// (letters, digits, '+', '.', '-') and "://", then userinfo up to an '@',
// host, path, and a query from '?'. A URL ends at white space, a quote,
// '<', '>', '#' or a backslash (in JSON text, the escape of the quote that
// closes its string), or where another URL's scheme begins. A scanner, not
// a regular expression: status of a thousand certificates is mostly text
// with URLs in it.
func redactURLs(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	done := 0 // s[:done] is in b
	for i >= 0 {
		start := i
		for start > done && isSchemeByte(s[start-1]) {
			start--
		}
		for start < i && !isLetter(s[start]) {
			start++ // a scheme starts with a letter
		}
		pos := i + len("://")
		if start == i { // no scheme: not a URL
			b.WriteString(s[done:pos])
			done = pos
		} else {
			b.WriteString(s[done:pos])
			if at := urlSpan(s, pos, "/?#@"); at < len(s) && s[at] == '@' {
				b.WriteString(redacted + "@")
				pos = at + 1
			}
			end := urlSpan(s, urlSpan(s, pos, "/?#"), "?#")
			if k := strings.Index(s[pos:end], "://"); k >= 0 {
				// Another URL inside this one's path: it ends where that
				// one's scheme begins, and that one is redacted in turn.
				end = pos + k
				for end > pos && isSchemeByte(s[end-1]) {
					end--
				}
			}
			b.WriteString(s[pos:end])
			pos = end
			if pos < len(s) && s[pos] == '?' {
				b.WriteString("?" + redacted)
				pos = urlSpan(s, pos+1, "#")
			}
			done = pos
		}
		next := strings.Index(s[done:], "://")
		if next < 0 {
			break
		}
		i = done + next
	}
	b.WriteString(s[done:])
	return b.String()
}

// urlSpan is the end of the run of URL bytes from i that holds none of
// stop.
func urlSpan(s string, i int, stop string) int {
	for i < len(s) {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\':
			return i
		case strings.IndexByte(stop, c) >= 0:
			return i
		}
		i++
	}
	return i
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isSchemeByte(c byte) bool {
	return isLetter(c) || '0' <= c && c <= '9' || c == '+' || c == '.' || c == '-'
}

// redactingHandler is a slog handler that applies the rule to every
// message and attribute before the next handler writes it.
type redactingHandler struct {
	next slog.Handler
	r    *redactor
}

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return redactingHandler{next: h.next.WithAttrs(red), r: h.r}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{next: h.next.WithGroup(name), r: h.r}
}

func (h redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = h.attr(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case []string:
			red := make([]string, len(x))
			for i, s := range x {
				red[i] = h.r.String(s)
			}
			return slog.Any(a.Key, red)
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return slog.String(a.Key, h.r.String(v.String()))
			}
			return slog.Any(a.Key, json.RawMessage(h.r.String(string(b))))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
