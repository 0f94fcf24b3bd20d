package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Reading and making PEM certificates: what a chain says of itself, and the
// self-signed placeholder.

func infoOf(leaf *x509.Certificate) *Info {
	sum := sha256.Sum256(leaf.Raw)
	issuer := leaf.Issuer.CommonName
	if issuer == "" && len(leaf.Issuer.Organization) > 0 {
		issuer = leaf.Issuer.Organization[0]
	}
	return &Info{
		Serial:      hex.EncodeToString(leaf.SerialNumber.Bytes()),
		Domains:     leafNames(leaf),
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		Issuer:      issuer,
		Placeholder: isPlaceholder(leaf),
		Fingerprint: hex.EncodeToString(sum[:]),
		KeyType:     keyTypeOf(leaf),
		Leaf:        leaf,
	}
}

// leafNames are the identifiers a leaf holds as labels write them: its DNS
// names, then its IP addresses (canonical: IPv6 compressed, RFC 5952).
func leafNames(leaf *x509.Certificate) []string {
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// keyTypeOf names the leaf's key the way labels and env name key types.
func keyTypeOf(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return map[string]string{"P-256": "ec256", "P-384": "ec384"}[k.Curve.Params().Name]
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	}
	return ""
}

func isPlaceholder(c *x509.Certificate) bool {
	for _, o := range c.Subject.Organization {
		if o == placeholderOrg {
			return true
		}
	}
	return false
}

func parseChain(pemBytes []byte) (*x509.Certificate, []*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no certificate in PEM data")
	}
	return certs[0], certs[1:], nil
}

func pemCerts(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func selfSigned(domains []string) (chain, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domains[0], Organization: []string{placeholderOrg}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(placeholderValid),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, d := range domains {
		if ip := net.ParseIP(d); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, d)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
