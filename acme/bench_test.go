package acme

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
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
		if _, err := s.Write("bench", chain, key, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManagerRestartThousand measures a restart with 1,000
// certificates on the volume: from a new Manager given the 1,000 wants
// until each is handed to the Deployer (which proves nothing here), no
// order placed. The e2e scale row adds the engine's list and the proof.
func BenchmarkManagerRestartThousand(b *testing.B) {
	const n = 1000
	store, st, ca, wants := thousandOnTheVolume(b, n)
	iss := &fakeIssuer{t: b, ca: ca, life: 90 * 24 * time.Hour}
	var live int64
	var handed, deployed time.Duration
	b.ReportAllocs()
	for b.Loop() {
		began := time.Now()
		m, dep, stop := startThousand(store, st, iss, wants)
		for {
			if _, k := dep.last(); k >= n {
				break
			}
			time.Sleep(time.Millisecond)
		}
		handed = time.Since(began)
		// Each deployment's result taken in: status shows all deployed.
		for !allDeployed(m.Status()) {
			time.Sleep(5 * time.Millisecond)
		}
		deployed = time.Since(began)
		// What the Manager keeps for n certificates: the live heap with it,
		// less the heap before it was made.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		live = int64(ms.HeapAlloc)
		heapProfile(b)
		stop()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		live -= int64(ms.HeapAlloc)
	}
	b.ReportMetric(float64(live)/n, "live-B/cert")
	b.ReportMetric(float64(handed.Microseconds())/1000, "handed-ms")
	b.ReportMetric(float64(deployed.Microseconds())/1000, "deployed-ms")
	if iss.count() != 0 {
		b.Fatalf("%d orders at a restart, want none", iss.count())
	}
}

// BenchmarkStatusWhileAThousandLoad: the longest a Status call waits while
// a new Manager loads 1,000 certificates from the volume and the state
// directory (a restart): the reading is done outside the Manager's lock,
// so status answers meanwhile.
func BenchmarkStatusWhileAThousandLoad(b *testing.B) {
	const n = 1000
	store, st, ca, wants := thousandOnTheVolume(b, n)
	iss := &fakeIssuer{t: b, ca: ca, life: 90 * 24 * time.Hour}
	var worst time.Duration
	for b.Loop() {
		m, dep, stop := startThousand(store, st, iss, wants)
		for {
			start := time.Now()
			m.Status()
			worst = max(worst, time.Since(start))
			if _, k := dep.last(); k >= n {
				break
			}
			time.Sleep(time.Millisecond)
		}
		stop()
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-status-ms")
}

func allDeployed(ss []CertStatus) bool {
	for _, s := range ss {
		if !s.Deployed {
			return false
		}
	}
	return len(ss) > 0
}

// startThousand runs a new Manager on the volume (a restart) and hands it
// the wants; stop ends it.
func startThousand(store *Store, st string, iss issuer, wants []Want) (*Manager, *fakeDeployer, func()) {
	dep := &fakeDeployer{}
	m := NewManager(ManagerConfig{Directory: "https://ca.test/dir", StateDir: st, MaxOrders: 10, Store: store, Issuer: iss,
		Deployer: dep, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	m.Update(wants)
	return m, dep, func() { cancel(); <-done }
}

// With a heap profile asked for, every allocation is sampled: the
// Manager's own heap is a few megabytes, below the default rate's grain.
func init() {
	if os.Getenv("EDGECERT_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
}

// heapProfile writes the live heap, as of the last collection, to the file
// EDGECERT_HEAP_PROFILE names, if any: its top allocations are
// `go tool pprof -top -sample_index=inuse_space acme.test FILE`.
func heapProfile(b *testing.B) {
	b.Helper()
	path := os.Getenv("EDGECERT_HEAP_PROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// thousandOnTheVolume is a store holding n certificates (c0 to c<n-1>),
// a state directory, their CA, and the wants for them.
func thousandOnTheVolume(b *testing.B, n int) (*Store, string, *testCA, []Want) {
	b.Helper()
	certs, st := b.TempDir(), b.TempDir()
	store, err := NewStore(certs, DefaultOwner)
	if err != nil {
		b.Fatal(err)
	}
	ca := newTestCA(b)
	wants := make([]Want, n)
	for i := range n {
		name := "c" + strconv.Itoa(i)
		d := name + ".example.com"
		chain, key := ca.issue(b, []string{d}, 90*24*time.Hour)
		if _, err := store.Write(name, chain, key, false); err != nil {
			b.Fatal(err)
		}
		wants[i] = Want{Name: name, Domains: []string{d}, Containers: []string{name}}
	}
	return store, st, ca, wants
}
