package signal

import (
	"path"
	"regexp"
	"slices"
)

// MissingFile is a certificate file a proxy's configuration names but the
// proxy cannot find, read from its config test's output.
type MissingFile struct {
	Path string // as the proxy sees it
	Cert string // the certificate name: the directory holding the file
}

// What nginx and Apache say of a certificate file that is not there.
var missingRE = []*regexp.Regexp{
	regexp.MustCompile(`cannot load certificate(?: key)? "([^"]+)": [^\n]*No such file or directory`),
	regexp.MustCompile(`SSLCertificate(?:Key)?File: file '([^']+)' does not exist or is empty`),
}

// certFiles are the names edgecert writes in each certificate directory.
var certFiles = []string{"fullchain.pem", "privkey.pem", "cert.pem", "chain.pem"}

// MissingFiles returns the edgecert-style certificate files (…/<name>/
// fullchain.pem and the like) that output says are missing, each once.
func MissingFiles(output string) []MissingFile {
	var out []MissingFile
	for _, re := range missingRE {
		for _, m := range re.FindAllStringSubmatch(output, -1) {
			p := m[1]
			if !slices.Contains(certFiles, path.Base(p)) {
				continue
			}
			f := MissingFile{Path: p, Cert: path.Base(path.Dir(p))}
			if f.Cert != "." && f.Cert != "/" && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}
