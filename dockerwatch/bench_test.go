package dockerwatch

import (
	"fmt"
	"testing"
)

// BenchmarkParse measures deriving the desired state from a host's full
// container list (1000 labelled containers), which happens on every relist.
func BenchmarkParse(b *testing.B) {
	cs := make([]Container, 1000)
	for i := range cs {
		cs[i] = Container{ID: fmt.Sprint(i), Name: fmt.Sprintf("app-%d", i), Created: int64(i), Running: true,
			Labels: map[string]string{"edgecert.domains": fmt.Sprintf("app%d.example.com,www.app%d.example.com", i, i)}}
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := Parse(testRules, cs); len(d.Certs) != 1000 {
			b.Fatalf("%d certificates", len(d.Certs))
		}
	}
}
