package legoissuer

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/registration"

	"github.com/edgecert/edgecert/acme/atomicfile"
)

// account is the ACME account: a key and a registration, persisted per
// directory URL in the state volume (0600).
type account struct {
	Email        string                 `json:"email"`
	Directory    string                 `json:"directory"`
	Registration *registration.Resource `json:"registration,omitempty"`
	key          crypto.PrivateKey
	dir          string
}

func (a *account) GetEmail() string                        { return a.Email }
func (a *account) GetRegistration() *registration.Resource { return a.Registration }
func (a *account) GetPrivateKey() crypto.PrivateKey        { return a.key }

// accountID names one account: one per CA directory and contact.
func accountID(directory, email string) string {
	sum := sha256.Sum256([]byte(directory + "\x00" + email))
	return hex.EncodeToString(sum[:8])
}

// accountDir is one account's directory in the state volume.
func accountDir(stateDir, directory, email string) string {
	return filepath.Join(stateDir, "accounts", accountID(directory, email))
}

// pullAccount makes the cluster's account for email this host's: its key
// and registration written to the state volume. None in the cluster: the
// local one (if any) stays, and is pushed once registered: missing says so.
func (l *Issuer) pullAccount(ctx context.Context, email string) (missing bool, err error) {
	key, reg, err := l.cfg.Accounts.LoadAccount(ctx, accountID(l.cfg.Directory, email))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("ACME account from the cluster: %w", err)
	}
	if _, err := certcrypto.ParsePEMPrivateKey(key); err != nil {
		return false, fmt.Errorf("ACME account from the cluster: %w", err)
	}
	dir := accountDir(l.cfg.StateDir, l.cfg.Directory, email)
	if err := atomicfile.Write(filepath.Join(dir, "key.pem"), key, 0o600); err != nil {
		return false, fmt.Errorf("account key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "account.json"), reg, 0o600); err != nil {
		return false, fmt.Errorf("save account: %w", err)
	}
	return false, nil
}

// pushAccount saves a registered account for the other hosts.
func (l *Issuer) pushAccount(a *account) error {
	reg, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.cfg.Accounts.SaveAccount(ctx, accountID(a.Directory, a.Email), certcrypto.PEMEncode(a.key), reg); err != nil {
		return fmt.Errorf("ACME account to the cluster: %w", err)
	}
	return nil
}

func loadAccount(stateDir, directory, email string) (*account, error) {
	dir := accountDir(stateDir, directory, email)
	a := &account{Email: email, Directory: directory, dir: dir}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		k, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
		if err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(dir, "key.pem"), certcrypto.PEMEncode(k), 0o600); err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
		a.key = k
		return a, nil
	case err != nil:
		return nil, fmt.Errorf("account key: %w", err)
	}
	if a.key, err = certcrypto.ParsePEMPrivateKey(keyPEM); err != nil {
		return nil, fmt.Errorf("account key %s: %w", filepath.Join(dir, "key.pem"), err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "account.json"))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	var saved account
	if err := json.Unmarshal(data, &saved); err != nil {
		return nil, fmt.Errorf("account %s: %w", filepath.Join(dir, "account.json"), err)
	}
	a.Registration = saved.Registration
	return a, nil
}

func (a *account) save() error {
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(a.dir, "account.json"), data, 0o600); err != nil {
		return fmt.Errorf("save account: %w", err)
	}
	return nil
}
