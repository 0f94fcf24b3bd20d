package signal

import (
	"slices"
	"testing"
)

func TestProofNamesSkipWildcards(t *testing.T) {
	if got := proofNames([]string{"*.example.com", "example.com"}); !slices.Equal(got, []string{"example.com"}) {
		t.Errorf("with a base name: %v", got)
	}
	if got := proofNames([]string{"*.example.com"}); !slices.Equal(got, []string{"edgecert-proof.example.com"}) {
		t.Errorf("wildcard only: %v", got)
	}
}
