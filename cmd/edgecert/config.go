package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/acme/legoissuer"
	"github.com/edgecert/edgecert/dockerwatch"
)

// Config is edgecert's whole configuration, read from the environment.
// README.md documents every field; keep the two in step.
type Config struct {
	ACMEDirectory string        `env:"EDGECERT_ACME_DIRECTORY" envDefault:"production"`
	ACMEEmail     string        `env:"EDGECERT_ACME_EMAIL"`
	ACMERoots     string        `env:"EDGECERT_ACME_ROOTS"`
	ACMEProfile   string        `env:"EDGECERT_ACME_PROFILE"`
	IPProfile     string        `env:"EDGECERT_IP_PROFILE" envDefault:"shortlived"`
	EABKid        string        `env:"EDGECERT_ACME_EAB_KID"`
	EABHMAC       string        `env:"EDGECERT_ACME_EAB_HMAC"`
	DryRunDir     string        `env:"EDGECERT_DRY_RUN_DIRECTORY" envDefault:"staging"`
	UnusedGrace   time.Duration `env:"EDGECERT_UNUSED_GRACE" envDefault:"168h"`
	ReloadWindow  time.Duration `env:"EDGECERT_RELOAD_DEBOUNCE" envDefault:"1s"`
	KeyType       string        `env:"EDGECERT_KEY_TYPE"` // default: acme.KeyTypes[0]
	Webroot       string        `env:"EDGECERT_WEBROOT" envDefault:"/var/www/acme"`
	CertsDir      string        `env:"EDGECERT_CERTS_DIR" envDefault:"/etc/edgecert/certs"`
	StateDir      string        `env:"EDGECERT_STATE_DIR" envDefault:"/var/lib/edgecert"`
	LabelPrefix   string        `env:"EDGECERT_LABEL_PREFIX" envDefault:"edgecert"`
	Socket        string        `env:"EDGECERT_SOCKET"` // default: defaultSocket
	MaxOrders     int           `env:"EDGECERT_MAX_ORDERS" envDefault:"10"`
	ReuseKey      bool          `env:"EDGECERT_REUSE_KEY"`
	ForcedLimit   int           `env:"EDGECERT_FORCED_RENEWALS" envDefault:"5"`
	ReloadTimeout time.Duration `env:"EDGECERT_RELOAD_TIMEOUT" envDefault:"30s"`
	OrderTimeout  time.Duration `env:"EDGECERT_ORDER_TIMEOUT" envDefault:"15m"`
	Debounce      time.Duration `env:"EDGECERT_DEBOUNCE" envDefault:"0s"`
	DockerResync  time.Duration `env:"EDGECERT_DOCKER_RESYNC" envDefault:"1m"`
	Webhooks      []string      `env:"EDGECERT_WEBHOOK_URLS" envSeparator:","`
	SlackHooks    []string      `env:"EDGECERT_SLACK_WEBHOOK_URLS" envSeparator:","`
	SMTPAddr      string        `env:"EDGECERT_SMTP_ADDR"`
	SMTPFrom      string        `env:"EDGECERT_SMTP_FROM"`
	SMTPTo        []string      `env:"EDGECERT_SMTP_TO" envSeparator:","`
	SMTPUser      string        `env:"EDGECERT_SMTP_USERNAME"`
	SMTPPass      string        `env:"EDGECERT_SMTP_PASSWORD"`
	SMTPTLS       string        `env:"EDGECERT_SMTP_TLS" envDefault:"auto"`
	DeployHook    string        `env:"EDGECERT_DEPLOY_HOOK"`
	MetricsAddr   string        `env:"EDGECERT_METRICS_ADDR"`
	StatusAddr    string        `env:"EDGECERT_STATUS_ADDR"`
	StatusAuth    string        `env:"EDGECERT_STATUS_AUTH_FILE"`
	Companion     bool          `env:"EDGECERT_ACME_COMPANION" envDefault:"false"`
	FlatLinks     bool          `env:"EDGECERT_FLAT_LINKS" envDefault:"false"`
	CompanionDir  string        `env:"EDGECERT_COMPANION_CERTS"`
	DNSProviders  []string      `env:"EDGECERT_DNS_PROVIDER" envSeparator:","`
	DNSResolvers  []string      `env:"EDGECERT_DNS_RESOLVERS" envSeparator:","`
	DNSTimeout    time.Duration `env:"EDGECERT_DNS_TIMEOUT" envDefault:"10s"`
	KeyOwner      string        `env:"EDGECERT_KEY_OWNER"`
	// Cluster mode (README "Many hosts: a cluster on etcd").
	EtcdEndpoints      []string      `env:"EDGECERT_ETCD_ENDPOINTS" envSeparator:","`
	EtcdCA             string        `env:"EDGECERT_ETCD_CA"`
	EtcdCert           string        `env:"EDGECERT_ETCD_CERT"`
	EtcdKey            string        `env:"EDGECERT_ETCD_KEY"`
	EtcdUser           string        `env:"EDGECERT_ETCD_USER"`
	EtcdPassword       string        `env:"EDGECERT_ETCD_PASSWORD"`
	EtcdPasswordFile   string        `env:"EDGECERT_ETCD_PASSWORD_FILE"`
	EtcdPrefix         string        `env:"EDGECERT_ETCD_PREFIX" envDefault:"/edgecert/"`
	ClusterSecret      string        `env:"EDGECERT_CLUSTER_SECRET"`
	ClusterSecretFile  string        `env:"EDGECERT_CLUSTER_SECRET_FILE"`
	PreviousSecret     string        `env:"EDGECERT_CLUSTER_SECRET_PREVIOUS"`
	PreviousSecretFile string        `env:"EDGECERT_CLUSTER_SECRET_PREVIOUS_FILE"`
	Node               string        `env:"EDGECERT_NODE"`
	ClusterTTL         time.Duration `env:"EDGECERT_CLUSTER_TTL" envDefault:"10s"`
	ClusterAckWait     time.Duration `env:"EDGECERT_CLUSTER_ACK_WAIT" envDefault:"10s"`
	LogLevel           string        `env:"EDGECERT_LOG_LEVEL" envDefault:"info"`
	LogFormat          string        `env:"EDGECERT_LOG_FORMAT" envDefault:"text"`

	keyUID, keyGID int // from KeyOwner; -1 when it is empty
	// notes: what the daemon says once at start about the configuration
	// (acme-companion variables taken or not honoured).
	notes []string
}

// defaultSocket is where the control socket is when EDGECERT_SOCKET is
// unset, for the daemon and the CLI alike.
const defaultSocket = "/run/edgecert/control.sock"

var prefixRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?$`)

// loadConfig reads and checks the environment. Every error names the variable.
func loadConfig() (Config, error) {
	var c Config
	if err := env.Parse(&c); err != nil {
		return c, envError(err)
	}
	c.Socket = cmp.Or(c.Socket, defaultSocket)
	bad := func(name, format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	if c.Companion {
		if err := companionEnv(&c); err != nil {
			return c, err
		}
	}
	c.KeyType = cmp.Or(c.KeyType, acme.KeyTypes[0])
	var ok bool
	if c.ACMEDirectory, ok = directoryURL(c.ACMEDirectory); !ok {
		return bad("EDGECERT_ACME_DIRECTORY", "%q is not an https URL, production or staging", c.ACMEDirectory)
	}
	if c.DryRunDir, ok = directoryURL(c.DryRunDir); !ok {
		return bad("EDGECERT_DRY_RUN_DIRECTORY", "%q is not an https URL, production or staging", c.DryRunDir)
	}
	if (c.EABKid == "") != (c.EABHMAC == "") {
		return bad("EDGECERT_ACME_EAB_KID", "external account binding needs both EDGECERT_ACME_EAB_KID and EDGECERT_ACME_EAB_HMAC")
	}
	if c.UnusedGrace < 0 {
		return bad("EDGECERT_UNUSED_GRACE", "%s: want 0 or more", c.UnusedGrace)
	}
	if c.ReloadWindow < 0 || c.ReloadWindow > time.Minute {
		return bad("EDGECERT_RELOAD_DEBOUNCE", "%s: want 0 to 1m", c.ReloadWindow)
	}
	if c.ACMEEmail != "" && (!strings.Contains(c.ACMEEmail, "@") || strings.ContainsAny(c.ACMEEmail, " ,<>")) {
		return bad("EDGECERT_ACME_EMAIL", "%q is not an email address", c.ACMEEmail)
	}
	if c.ACMERoots != "" {
		if _, err := os.Stat(c.ACMERoots); err != nil {
			return bad("EDGECERT_ACME_ROOTS", "%v", err)
		}
	}
	if !slices.Contains(acme.KeyTypes, c.KeyType) {
		return bad("EDGECERT_KEY_TYPE", "%q: want one of %s", c.KeyType, strings.Join(acme.KeyTypes, ", "))
	}
	for _, d := range []struct{ name, val string }{{"EDGECERT_WEBROOT", c.Webroot}, {"EDGECERT_CERTS_DIR", c.CertsDir},
		{"EDGECERT_STATE_DIR", c.StateDir}, {"EDGECERT_SOCKET", c.Socket}} {
		if !strings.HasPrefix(d.val, "/") {
			return bad(d.name, "%q is not an absolute path", d.val)
		}
	}
	if !prefixRE.MatchString(c.LabelPrefix) {
		return bad("EDGECERT_LABEL_PREFIX", "%q: use lowercase letters, digits, '.' and '-'", c.LabelPrefix)
	}
	if c.MaxOrders < 1 || c.MaxOrders > 50 {
		return bad("EDGECERT_MAX_ORDERS", "%d: want 1 to 50", c.MaxOrders)
	}
	if c.ForcedLimit < 0 || c.ForcedLimit > 1000 {
		return bad("EDGECERT_FORCED_RENEWALS", "%d: want 0 (no bound) to 1000", c.ForcedLimit)
	}
	if c.ReloadTimeout < time.Second {
		return bad("EDGECERT_RELOAD_TIMEOUT", "%s: want at least 1s", c.ReloadTimeout)
	}
	if c.OrderTimeout < time.Minute || c.OrderTimeout > 24*time.Hour {
		return bad("EDGECERT_ORDER_TIMEOUT", "%s: want 1m to 24h", c.OrderTimeout)
	}
	if c.Debounce < 0 || c.Debounce > time.Minute {
		return bad("EDGECERT_DEBOUNCE", "%s: want 0 to 1m", c.Debounce)
	}
	if c.DockerResync < 5*time.Second || c.DockerResync > time.Hour {
		return bad("EDGECERT_DOCKER_RESYNC", "%s: want 5s to 1h", c.DockerResync)
	}
	for _, u := range append(slices.Clone(c.Webhooks), c.SlackHooks...) {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return bad("EDGECERT_WEBHOOK_URLS", "%q is not an http(s) URL", destName(u))
		}
	}
	if c.SMTPAddr != "" && (c.SMTPFrom == "" || len(c.SMTPTo) == 0) {
		return bad("EDGECERT_SMTP_ADDR", "email needs EDGECERT_SMTP_FROM and EDGECERT_SMTP_TO too")
	}
	if !slices.Contains([]string{"auto", "implicit", "starttls", "opportunistic", "none"}, c.SMTPTLS) {
		return bad("EDGECERT_SMTP_TLS", "%q: want auto, implicit, starttls, opportunistic or none", c.SMTPTLS)
	}
	if c.SMTPAddr != "" {
		if _, port, err := net.SplitHostPort(c.SMTPAddr); err != nil || port == "" {
			return bad("EDGECERT_SMTP_ADDR", "%q: want host:port, e.g. smtp.example.com:587", c.SMTPAddr)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return bad("EDGECERT_METRICS_ADDR", "%q: want host:port, e.g. :9090", c.MetricsAddr)
		}
	}
	if c.StatusAddr != "" {
		if _, _, err := net.SplitHostPort(c.StatusAddr); err != nil {
			return bad("EDGECERT_STATUS_ADDR", "%q: want host:port, e.g. :8080", c.StatusAddr)
		}
	}
	if c.StatusAuth != "" && c.StatusAddr == "" {
		return bad("EDGECERT_STATUS_AUTH_FILE", "set without EDGECERT_STATUS_ADDR: there is no status page to protect")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return bad("EDGECERT_LOG_LEVEL", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("EDGECERT_LOG_FORMAT", "%q: want text or json", c.LogFormat)
	}
	for i, n := range c.DNSProviders {
		c.DNSProviders[i] = strings.TrimSpace(n)
		if err := legoissuer.CheckDNSProvider(c.DNSProviders[i]); err != nil {
			return bad("EDGECERT_DNS_PROVIDER", "%v", err)
		}
	}
	if c.DNSTimeout < time.Second || c.DNSTimeout > time.Minute {
		return bad("EDGECERT_DNS_TIMEOUT", "%s: want 1s to 1m", c.DNSTimeout)
	}
	if c.CompanionDir != "" && !strings.HasPrefix(c.CompanionDir, "/") {
		return bad("EDGECERT_COMPANION_CERTS", "%q is not an absolute path", c.CompanionDir)
	}
	if err := clusterConfig(&c); err != nil {
		return c, err
	}
	if c.keyUID, c.keyGID, ok = parseOwner(c.KeyOwner); !ok {
		return bad("EDGECERT_KEY_OWNER", "%q: want a numeric UID or UID:GID, e.g. 101:101 for nginx-unprivileged", c.KeyOwner)
	}
	return c, nil
}

// parseOwner reads "", "UID" (group UID too) or "UID:GID"; "" gives -1, -1.
func parseOwner(s string) (uid, gid int, ok bool) {
	if s == "" {
		return -1, -1, true
	}
	u, g, found := strings.Cut(s, ":")
	if !found {
		g = u
	}
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 || uid > 1<<31-2 || gid > 1<<31-2 {
		return -1, -1, false
	}
	return uid, gid, true
}

// directoryURL expands the production and staging shortcuts and checks that
// the result is an https URL.
func directoryURL(s string) (string, bool) {
	switch s {
	case "production":
		s = legoissuer.DirectoryProduction
	case "staging":
		s = legoissuer.DirectoryStaging
	}
	u, err := url.Parse(s)
	return s, err == nil && u.Scheme == "https" && u.Host != ""
}

// envError rewrites the env library's field names into variable names.
func envError(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeOf(Config{})
	var msgs []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				msgs = append(msgs, fmt.Sprintf("%s: %q: %v", f.Tag.Get("env"), os.Getenv(f.Tag.Get("env")), pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// acme-companion's variables that edgecert takes in acme-companion mode, when
// the EDGECERT_ variable of the same meaning is not set, and those it does
// not honour (named once in the log, so that nothing is silently ignored).
var (
	companionIgnored = []string{"ACME_PRE_HOOK", "ACME_POST_HOOK", "RENEW_PRIVATE_KEYS", "REUSE_PRIVATE_KEYS",
		"CERTS_UPDATE_INTERVAL", "ZEROSSL_API_KEY", "DHPARAM_BITS", "DHPARAM_SKIP", "DHPARAM_GENERATION", "ACME_CHALLENGE",
		"CA_BUNDLE", "NGINX_PROXY_CONTAINER", "NGINX_DOCKER_GEN_CONTAINER", "DOCKER_PROVIDER", "ACME_OCSP", "ACME_PREFERRED_CHAIN",
		"ACME_RENEW_AFTER", "DEFAULT_RENEW", "CREATE_DEFAULT_CERTIFICATE", "RELOAD_NGINX_ONLY_ONCE", "ACME_HTTP_CHALLENGE_LOCATION",
		"DOCKER_CONTAINER_FILTERS", "FILES_UID", "FILES_GID", "FILES_PERMS", "FOLDERS_PERMS"}
)

func companionEnv(c *Config) error {
	set := func(name string) bool { _, ok := os.LookupEnv(name); return ok }
	take := func(dst *string, edgecertVar, companionVar, val string) {
		if set(edgecertVar) || val == "" {
			return
		}
		*dst = val
		c.notes = append(c.notes, fmt.Sprintf("%s taken for %s (acme-companion's variable)", companionVar, edgecertVar))
	}
	take(&c.ACMEDirectory, "EDGECERT_ACME_DIRECTORY", "ACME_CA_URI", os.Getenv("ACME_CA_URI"))
	if strings.EqualFold(os.Getenv("LETSENCRYPT_TEST"), "true") {
		// As in acme-companion, LETSENCRYPT_TEST wins over ACME_CA_URI.
		take(&c.ACMEDirectory, "EDGECERT_ACME_DIRECTORY", "LETSENCRYPT_TEST", "staging")
	}
	take(&c.ACMEEmail, "EDGECERT_ACME_EMAIL", "DEFAULT_EMAIL", os.Getenv("DEFAULT_EMAIL"))
	take(&c.ACMEProfile, "EDGECERT_ACME_PROFILE", "ACME_CERT_PROFILE", os.Getenv("ACME_CERT_PROFILE"))
	for _, v := range []string{"ACME_KEYSIZE", "DEFAULT_KEY_SIZE"} {
		raw := os.Getenv(v)
		if raw == "" {
			continue
		}
		kt, err := dockerwatch.CompanionKeyType(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", v, err)
		}
		take(&c.KeyType, "EDGECERT_KEY_TYPE", v, kt)
		break
	}
	if c.EABKid == "" && c.EABHMAC == "" {
		take(&c.EABKid, "EDGECERT_ACME_EAB_KID", "ACME_EAB_KID", os.Getenv("ACME_EAB_KID"))
		take(&c.EABHMAC, "EDGECERT_ACME_EAB_HMAC", "ACME_EAB_HMAC_KEY", os.Getenv("ACME_EAB_HMAC_KEY"))
	}
	for _, v := range companionIgnored {
		if set(v) {
			c.notes = append(c.notes, v+" is acme-companion's and is not honoured by edgecert (see README, Coming from acme-companion)")
		}
	}
	return nil
}

// etcdTLS says whether an etcd endpoint is reached over TLS.
func etcdTLS(endpoint string) bool { return strings.HasPrefix(endpoint, "https://") }

// clusterConfig checks the cluster variables when EDGECERT_ETCD_ENDPOINTS
// is set, reading the secrets their _FILE forms name.
func clusterConfig(c *Config) error {
	if len(c.EtcdEndpoints) == 0 {
		return nil
	}
	for i, e := range c.EtcdEndpoints {
		e = strings.TrimSpace(e)
		c.EtcdEndpoints[i] = e
		host := e
		if u, err := url.Parse(e); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
			host = u.Host
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			return fmt.Errorf("EDGECERT_ETCD_ENDPOINTS: %q: want https://host:port (or host:port)", e)
		}
		if i > 0 && etcdTLS(e) != etcdTLS(c.EtcdEndpoints[0]) {
			return fmt.Errorf("EDGECERT_ETCD_ENDPOINTS: %q and %q: every endpoint https:// or none (one client talks to all of them)", c.EtcdEndpoints[0], e)
		}
	}
	read := func(name, value, file string) (string, error) {
		if file == "" {
			return value, nil
		}
		if value != "" {
			return "", fmt.Errorf("%s and %s_FILE are both set: keep one", name, name)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	var err error
	if c.ClusterSecret, err = read("EDGECERT_CLUSTER_SECRET", c.ClusterSecret, c.ClusterSecretFile); err != nil {
		return err
	}
	if len(c.ClusterSecret) < 16 {
		return errors.New("EDGECERT_CLUSTER_SECRET (or _FILE): cluster mode needs a secret of at least 16 characters, the same on every host (it seals the private keys kept in etcd); e.g. openssl rand -base64 32")
	}
	if c.PreviousSecret, err = read("EDGECERT_CLUSTER_SECRET_PREVIOUS", c.PreviousSecret, c.PreviousSecretFile); err != nil {
		return err
	}
	if c.PreviousSecret != "" && len(c.PreviousSecret) < 16 {
		return errors.New("EDGECERT_CLUSTER_SECRET_PREVIOUS (or _FILE): the secret being rotated away from, at least 16 characters")
	}
	if c.EtcdPassword, err = read("EDGECERT_ETCD_PASSWORD", c.EtcdPassword, c.EtcdPasswordFile); err != nil {
		return err
	}
	if (c.EtcdUser == "") != (c.EtcdPassword == "") {
		return errors.New("EDGECERT_ETCD_USER and EDGECERT_ETCD_PASSWORD: set both or neither")
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return errors.New("EDGECERT_ETCD_CERT and EDGECERT_ETCD_KEY: set both or neither")
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") {
		return fmt.Errorf("EDGECERT_ETCD_PREFIX: %q: want a key prefix starting with /, e.g. /edgecert/", c.EtcdPrefix)
	}
	if !strings.HasSuffix(c.EtcdPrefix, "/") {
		c.EtcdPrefix += "/"
	}
	if c.Node == "" {
		if c.Node, err = os.Hostname(); err != nil {
			return fmt.Errorf("EDGECERT_NODE: unset, and no host name: %w", err)
		}
	}
	if !prefixRE.MatchString(c.Node) {
		return fmt.Errorf("EDGECERT_NODE: %q: want lowercase letters, digits, dots and dashes", c.Node)
	}
	if c.ClusterTTL < 2*time.Second || c.ClusterTTL > time.Minute {
		return fmt.Errorf("EDGECERT_CLUSTER_TTL: %s: want 2s to 1m", c.ClusterTTL)
	}
	if c.ClusterAckWait < time.Second || c.ClusterAckWait > 5*time.Minute {
		return fmt.Errorf("EDGECERT_CLUSTER_ACK_WAIT: %s: want 1s to 5m", c.ClusterAckWait)
	}
	return nil
}
