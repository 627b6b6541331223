package revocation

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// The benchmarks hold 1M jti entries, the default capacity, with jtis and an
// issuer shaped like real ones (a UUID, an https URL).
const denyBenchN = 1_000_000

func denyBenchJTI(i int) string {
	return fmt.Sprintf("4f1c%04x-%04x-4%03x-a%03x-%012x", i>>16&0xffff, i&0xffff, i&0xfff, (i>>12)&0xfff, uint64(i)*0x9e3779b97f4a7c15>>16)
}

// denyBenchList returns a denylist holding n jti entries, rebuilt once, as
// it is after the first Run tick. It runs on the real clock, whose cost is
// part of every hit.
func denyBenchList(b *testing.B, n int) *Denylist {
	b.Helper()
	d, err := NewDenylist(Options{})
	if err != nil {
		b.Fatal(err)
	}
	exp := time.Now().Unix() + 3600
	for i := range n {
		d.Apply(Event{Kind: KindJTI, Iss: denyIss, Value: denyBenchJTI(i), Exp: exp})
	}
	d.Rebuild()
	if got := d.Len(KindJTI); got != n {
		b.Fatalf("Len = %d, want %d", got, n)
	}
	return d
}

// denyBenchTokens are tokens to look up, cycled through so that lookups
// reach all over the filter and table instead of one hot cache line.
func denyBenchTokens(n int, id func(i int) string) []Token {
	toks := make([]Token, n)
	for i := range toks {
		// Now as sidegate passes it: the decision's own clock reading.
		toks[i] = Token{Issuer: denyIss, Subject: fmt.Sprintf("usr_%d", i), ID: id(i), KeyID: "2024-rot-1", IssuedAt: float64(denyTestNow.Unix() - 60), Now: time.Now().Unix()}
	}
	return toks
}

// BenchmarkRevokedMiss: a token that is not revoked, among 1M revoked jtis.
// The 64Ki tokens cycled through make each lookup a cache miss on the
// filter (2 MB, over this machine's L2) and on the token itself.
func BenchmarkRevokedMiss(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	toks := denyBenchTokens(1<<16, func(i int) string { return denyBenchJTI(denyBenchN + i) })
	denyBenchLookups(b, d, toks, false)
}

// BenchmarkRevokedMissCached: as BenchmarkRevokedMiss, but cycling through
// 1024 tokens only, so that they and their filter lines stay in cache: the
// compute cost of a miss, without memory latency.
func BenchmarkRevokedMissCached(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	toks := denyBenchTokens(1<<10, func(i int) string { return denyBenchJTI(denyBenchN + i) })
	denyBenchLookups(b, d, toks, false)
}

// BenchmarkRevokedHit: a revoked jti among 1M.
func BenchmarkRevokedHit(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	rng := rand.New(rand.NewPCG(1, 2))
	toks := denyBenchTokens(1<<16, func(int) string { return denyBenchJTI(rng.IntN(denyBenchN)) })
	denyBenchLookups(b, d, toks, true)
}

// BenchmarkRevokedHitRepeat: the same revoked token again and again (a
// client retrying with it), so filter and table lines are in cache: what
// a hit costs apart from memory latency.
func BenchmarkRevokedHitRepeat(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	tok := denyBenchTokens(1, func(int) string { return denyBenchJTI(12345) })[0]
	b.ReportAllocs()
	for b.Loop() {
		if !d.Revoked(tok) {
			b.Fatal("passed")
		}
	}
}

// BenchmarkRevokedMissAllKinds: a token that is not revoked when subject
// cutoffs and kids are revoked too, so all three of its keys are looked up.
func BenchmarkRevokedMissAllKinds(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	for i := range 10_000 {
		d.Apply(Event{Kind: KindSub, Iss: denyIss, Value: fmt.Sprintf("banned_%d", i), IssuedBefore: time.Now().Unix()})
	}
	d.Apply(Event{Kind: KindKid, Iss: denyIss, Value: "2023-leaked"})
	toks := denyBenchTokens(1<<16, func(i int) string { return denyBenchJTI(denyBenchN + i) })
	denyBenchLookups(b, d, toks, false)
}

// BenchmarkRevokedMissEmpty: the cost when nothing is revoked at all.
func BenchmarkRevokedMissEmpty(b *testing.B) {
	d, err := NewDenylist(Options{})
	if err != nil {
		b.Fatal(err)
	}
	tok := denyBenchTokens(1, denyBenchJTI)[0]
	b.ReportAllocs()
	for b.Loop() {
		if d.Revoked(tok) {
			b.Fatal("denied")
		}
	}
}

// BenchmarkApply: adding a jti to a denylist already holding 1M.
func BenchmarkApply(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	evs := make([]Event, 1<<16)
	for i := range evs {
		evs[i] = Event{Kind: KindJTI, Iss: denyIss, Value: denyBenchJTI(2*denyBenchN + i), Exp: time.Now().Unix() + 3600}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Apply(evs[i&(len(evs)-1)]) // after the first round, a no-op update
		i++
	}
}

// BenchmarkRebuild1M: dropping expired entries and rebuilding the filter
// and table for 1M live entries, as Run does every interval.
func BenchmarkRebuild1M(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	b.ReportAllocs()
	for b.Loop() {
		d.Rebuild()
	}
	if got := d.Len(KindJTI); got != denyBenchN {
		b.Fatalf("Len = %d, want %d", got, denyBenchN)
	}
}

// denyHeap is the live heap after a full collection.
func denyHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkHeap1M reports the heap held by a denylist of 1M jti entries:
// heap-B right after the applies (the table between 60% and 85% full),
// rebuilt-heap-B after a rebuild (the steady state), table-B and filter-B
// its parts. One op builds the whole denylist.
func BenchmarkHeap1M(b *testing.B) {
	var d *Denylist
	var applied, rebuilt uint64
	for b.Loop() {
		d = nil
		base := denyHeap()
		clock := denyNewClock()
		d, _ = denyNew(b, clock, Options{})
		exp := clock.unix() + 3600
		for i := range denyBenchN {
			d.Apply(Event{Kind: KindJTI, Iss: denyIss, Value: denyBenchJTI(i), Exp: exp})
		}
		applied = denyHeap() - base
		d.Rebuild()
		rebuilt = denyHeap() - base
	}
	s := d.state.Load()
	b.ReportMetric(float64(applied), "heap-B")
	b.ReportMetric(float64(rebuilt), "rebuilt-heap-B")
	b.ReportMetric(float64(len(s.slots)*24), "table-B")
	b.ReportMetric(float64(s.filters[denyJTI].bytes()), "filter-B")
	runtime.KeepAlive(d)
}

// BenchmarkFalsePositiveRate measures the filter of a denylist holding
// exactly Capacity (1M) jti entries: the share of 1M never-revoked jtis it
// sends on to the exact set (fp-rate; sized for 0.001), and what one such
// false positive costs in Revoked (ns/op).
func BenchmarkFalsePositiveRate(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	s := d.state.Load()
	if s.filters[denyJTI].n != denyBenchN {
		b.Fatalf("filter sized for %d, want %d", s.filters[denyJTI].n, denyBenchN)
	}
	var fps []Token
	const trials = 1_000_000
	for i := range trials {
		id := denyBenchJTI(denyBenchN + i)
		if s.filters[denyJTI].test(d.key0(denyJTI, d.issHash(0, denyIss), id)) {
			fps = append(fps, Token{Issuer: denyIss, ID: id})
		}
	}
	if len(fps) == 0 {
		b.Fatal("no false positive in a million")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d.Revoked(fps[i%len(fps)]) {
			b.Fatal("a false positive denied")
		}
		i++
	}
	// After the loop: b.Loop's start drops metrics reported before it.
	b.ReportMetric(float64(len(fps))/trials, "fp-rate")
	b.ReportMetric(float64(s.filters[denyJTI].bytes()), "filter-B")
	b.ReportMetric(float64(s.filters[denyJTI].k), "k")
}

// denyBenchLookups times Revoked over toks, cycled (len(toks) is a power
// of two), failing if any answer is not want.
func denyBenchLookups(b *testing.B, d *Denylist, toks []Token, want bool) {
	b.Helper()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d.Revoked(toks[i&(len(toks)-1)]) != want {
			b.Fatalf("Revoked = %v, want %v", !want, want)
		}
		i++
	}
}

// BenchmarkMemoryLatency is the machine's floor under RevokedMiss and
// RevokedHit: one load that depends on the one before (ns/op), at random
// cache lines of a block the size of the 1M-entry filter (which a miss
// reads one line of) and of the 1M-entry table (which a hit reads one
// line of, after the filter's). A hit cannot cost less than the two
// together, nor a miss less than the first; hashing and the bit tests
// come on top.
func BenchmarkMemoryLatency(b *testing.B) {
	d := denyBenchList(b, denyBenchN)
	s := d.state.Load()
	for _, c := range []struct {
		name string
		size int
	}{
		{"filter", s.filters[denyJTI].bytes()},
		{"table", len(s.slots) * int(unsafe.Sizeof(s.slots[0]))},
	} {
		b.Run(fmt.Sprintf("%s-%.1fMiB", c.name, float64(c.size)/(1<<20)), func(b *testing.B) {
			// next[line*8] holds the line to read after this one: a single
			// random cycle through every line, so that the hardware
			// prefetcher cannot guess the next address.
			lines := c.size / 64
			next := make([]uint64, lines*8)
			perm := rand.New(rand.NewPCG(3, 4)).Perm(lines)
			for i := range lines {
				next[perm[i]*8] = uint64(perm[(i+1)%lines])
			}
			var p uint64
			for b.Loop() {
				p = next[p*8]
			}
			runtime.KeepAlive(p)
		})
	}
}
