package legoissuer

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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

// accountDir is one account's directory: one per CA directory and contact.
func accountDir(stateDir, directory, email string) string {
	sum := sha256.Sum256([]byte(directory + "\x00" + email))
	return filepath.Join(stateDir, "accounts", hex.EncodeToString(sum[:8]))
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
