package acme

import (
	"testing"
	"time"
)

// BenchmarkStoreWrite measures one atomic pair write (four files, fsyncs,
// one symlink rename, pruning) on the test machine's disk.
func BenchmarkStoreWrite(b *testing.B) {
	s, err := NewStore(b.TempDir(), DefaultOwner)
	if err != nil {
		b.Fatal(err)
	}
	chain, key := newTestCA(b).issue(b, []string{"bench.example.com"}, 90*24*time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Write("bench", chain, key); err != nil {
			b.Fatal(err)
		}
	}
}
