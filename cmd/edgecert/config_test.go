package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecert/edgecert/acme/legoissuer"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.ACMEDirectory != legoissuer.DirectoryProduction || c.KeyType != "ec256" || c.LabelPrefix != "edgecert" ||
		c.CertsDir != "/etc/edgecert/certs" || c.Webroot != "/var/www/acme" || c.StateDir != "/var/lib/edgecert" ||
		c.ReloadTimeout != 30*time.Second || c.MaxOrders != 10 {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestLoadConfigNamesTheBadVariable(t *testing.T) {
	tests := []struct {
		desc, name, value string
	}{
		{desc: "not https", name: "EDGECERT_ACME_DIRECTORY", value: "http://ca.example/dir"},
		{desc: "not a number", name: "EDGECERT_MAX_ORDERS", value: "many"},
		{desc: "out of range", name: "EDGECERT_MAX_ORDERS", value: "0"},
		{desc: "not a duration", name: "EDGECERT_RELOAD_TIMEOUT", value: "soon"},
		{desc: "unknown key type", name: "EDGECERT_KEY_TYPE", value: "dsa"},
		{desc: "relative path", name: "EDGECERT_CERTS_DIR", value: "certs"},
		{desc: "bad prefix", name: "EDGECERT_LABEL_PREFIX", value: "Edge Cert"},
		{desc: "missing roots file", name: "EDGECERT_ACME_ROOTS", value: "/nonexistent/roots.pem"},
		{desc: "bad email", name: "EDGECERT_ACME_EMAIL", value: "ops at example.com"},
		{desc: "bad log level", name: "EDGECERT_LOG_LEVEL", value: "loud"},
		{desc: "key owner by name", name: "EDGECERT_KEY_OWNER", value: "nginx"},
		{desc: "negative key owner", name: "EDGECERT_KEY_OWNER", value: "101:-1"},
		{desc: "resync too often", name: "EDGECERT_DOCKER_RESYNC", value: "1s"},
		{desc: "negative forced renewals", name: "EDGECERT_FORCED_RENEWALS", value: "-1"},
		{desc: "status page without a port", name: "EDGECERT_STATUS_ADDR", value: "status.example"},
		{desc: "a password for no status page", name: "EDGECERT_STATUS_AUTH_FILE", value: "/run/secrets/htpasswd"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			_, err := loadConfig()
			if err == nil || !strings.HasPrefix(err.Error(), tc.name+":") {
				t.Fatalf("loadConfig with %s=%q: %v; want an error naming %s", tc.name, tc.value, err, tc.name)
			}
		})
	}
}

func TestLoadConfigStagingShortcut(t *testing.T) {
	t.Setenv("EDGECERT_ACME_DIRECTORY", "staging")
	c, err := loadConfig()
	if err != nil || c.ACMEDirectory != legoissuer.DirectoryStaging {
		t.Fatalf("staging = %q, %v", c.ACMEDirectory, err)
	}
}

func TestLoadConfigKeyOwner(t *testing.T) {
	for value, want := range map[string][2]int{"": {-1, -1}, "101": {101, 101}, "101:33": {101, 33}, "0:0": {0, 0}} {
		t.Setenv("EDGECERT_KEY_OWNER", value)
		c, err := loadConfig()
		if err != nil || c.keyUID != want[0] || c.keyGID != want[1] {
			t.Errorf("EDGECERT_KEY_OWNER=%q: %d:%d, %v; want %d:%d", value, c.keyUID, c.keyGID, err, want[0], want[1])
		}
	}
}

// In acme-companion mode its own variables are taken where the EDGECERT_
// one is not set, and the ones edgecert does not honour are named.
func TestCompanionVariables(t *testing.T) {
	t.Setenv("EDGECERT_ACME_COMPANION", "true")
	t.Setenv("LETSENCRYPT_TEST", "true")
	t.Setenv("ACME_CA_URI", "https://ca.example/dir")
	t.Setenv("DEFAULT_EMAIL", "ops@example.com")
	t.Setenv("ACME_KEYSIZE", "4096")
	t.Setenv("ACME_POST_HOOK", "echo hi")
	t.Setenv("ACME_CERT_PROFILE", "tlsserver")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.ACMEDirectory != legoissuer.DirectoryStaging || c.ACMEEmail != "ops@example.com" || c.KeyType != "rsa4096" || c.ACMEProfile != "tlsserver" {
		t.Errorf("directory %s email %s key %s profile %s; want staging (LETSENCRYPT_TEST wins over ACME_CA_URI), ops@example.com, rsa4096, tlsserver",
			c.ACMEDirectory, c.ACMEEmail, c.KeyType, c.ACMEProfile)
	}
	if notes := strings.Join(c.notes, "\n"); !strings.Contains(notes, "ACME_POST_HOOK is acme-companion's and is not honoured") ||
		!strings.Contains(notes, "DEFAULT_EMAIL taken for EDGECERT_ACME_EMAIL") || strings.Contains(notes, "ops@example.com") {
		t.Errorf("notes = %q", notes)
	}

	t.Setenv("EDGECERT_KEY_TYPE", "ec384") // edgecert's own variable wins
	t.Setenv("EDGECERT_ACME_DIRECTORY", "https://mine.example/dir")
	if c, err := loadConfig(); err != nil || c.KeyType != "ec384" || c.ACMEDirectory != "https://mine.example/dir" {
		t.Errorf("with EDGECERT_ variables set: %v %s %s", err, c.KeyType, c.ACMEDirectory)
	}
	t.Setenv("EDGECERT_KEY_TYPE", "")
	t.Setenv("ACME_KEYSIZE", "1024")
	if _, err := loadConfig(); err == nil || !strings.HasPrefix(err.Error(), "ACME_KEYSIZE:") {
		t.Errorf("a bad ACME_KEYSIZE: %v; want an error naming it", err)
	}
	t.Setenv("EDGECERT_ACME_COMPANION", "false")
	if c, err := loadConfig(); err != nil || c.ACMEEmail != "" {
		t.Errorf("outside acme-companion mode its variables are taken: %v %q", err, c.ACMEEmail)
	}
}

func TestClusterConfig(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc string
		env  map[string]string
		err  string // the variable the error names; "" for none
	}{
		{desc: "no secret", env: map[string]string{}, err: "EDGECERT_CLUSTER_SECRET"},
		{desc: "short secret", env: map[string]string{"EDGECERT_CLUSTER_SECRET": "short"}, err: "EDGECERT_CLUSTER_SECRET"},
		{desc: "secret from a file", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret}},
		{desc: "secret twice", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_CLUSTER_SECRET": "0123456789abcdef"}, err: "EDGECERT_CLUSTER_SECRET"},
		{desc: "bad endpoint", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_ETCD_ENDPOINTS": "etcd1"}, err: "EDGECERT_ETCD_ENDPOINTS"},
		{desc: "mixed schemes", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_ETCD_ENDPOINTS": "https://etcd1:2379,etcd2:2379"}, err: "EDGECERT_ETCD_ENDPOINTS"},
		{desc: "short previous secret", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_CLUSTER_SECRET_PREVIOUS": "short"}, err: "EDGECERT_CLUSTER_SECRET_PREVIOUS"},
		{desc: "previous secret", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_CLUSTER_SECRET_PREVIOUS": "the old one, long enough"}},
		{desc: "user without password", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_ETCD_USER": "edgecert"}, err: "EDGECERT_ETCD_USER"},
		{desc: "cert without key", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_ETCD_CERT": "/c.pem"}, err: "EDGECERT_ETCD_CERT"},
		{desc: "bad node", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_NODE": "Web 1"}, err: "EDGECERT_NODE"},
		{desc: "ttl too short", env: map[string]string{"EDGECERT_CLUSTER_SECRET_FILE": secret, "EDGECERT_CLUSTER_TTL": "1s"}, err: "EDGECERT_CLUSTER_TTL"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Setenv("EDGECERT_ETCD_ENDPOINTS", "https://etcd1:2379,https://etcd2:2379")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := loadConfig()
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "":
				if c.ClusterSecret != "0123456789abcdef0123" || c.Node == "" || c.EtcdPrefix != "/edgecert/" {
					t.Errorf("secret %q, node %q, prefix %q", c.ClusterSecret, c.Node, c.EtcdPrefix)
				}
			case err == nil || !strings.HasPrefix(err.Error(), tc.err):
				t.Errorf("%v; want an error naming %s", err, tc.err)
			}
		})
	}
}
