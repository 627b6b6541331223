package revocation

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	denyIss      = "https://login.example.com/"
	denyOtherIss = "https://other.example.com/"
	denyLeeway   = 30 * time.Second
	denyMaxLife  = 24 * time.Hour
)

// denyTestNow is the tests' starting time (2026-01-01T00:00:00Z).
var denyTestNow = time.Unix(1_767_225_600, 0)

// denyClock is a settable clock, safe to read from many goroutines.
type denyClock struct{ ns atomic.Int64 }

func denyNewClock() *denyClock {
	c := &denyClock{}
	c.ns.Store(denyTestNow.UnixNano())
	return c
}

func (c *denyClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *denyClock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *denyClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *denyClock) unix() int64             { return c.now().Unix() }

// denyNew builds a denylist on the clock with its own registry.
func denyNew(tb testing.TB, clock *denyClock, opts Options) (*Denylist, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	opts.Now, opts.Registerer = clock.now, reg
	if opts.MaxLifetime == 0 {
		opts.MaxLifetime = denyMaxLife
	}
	if opts.Leeway == 0 {
		opts.Leeway = denyLeeway
	}
	d, err := NewDenylist(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return d, reg
}

// denyToken is a token of denyIss with every field set; edit modifies it.
func denyToken(edit func(*Token)) Token {
	t := Token{Issuer: denyIss, Subject: "usr_1", ID: "jti_1", KeyID: "key_1", IssuedAt: float64(denyTestNow.Unix() - 60)}
	if edit != nil {
		edit(&t)
	}
	return t
}

func denyApply(tb testing.TB, d *Denylist, ev Event, want bool) {
	tb.Helper()
	if got := d.Apply(ev); got != want {
		tb.Fatalf("Apply(%+v) = %v, want %v", ev, got, want)
	}
}

func denyCheck(tb testing.TB, d *Denylist, name string, t Token, want bool) {
	tb.Helper()
	if got := d.Revoked(t); got != want {
		tb.Errorf("%s: Revoked(%+v) = %v, want %v", name, t, got, want)
	}
}

// TestDenylistKinds: each kind of event revokes what it names and nothing
// else.
func TestDenylistKinds(t *testing.T) {
	now := denyTestNow.Unix()
	type check struct {
		name    string
		tok     Token
		revoked bool
	}
	cases := []struct {
		name   string
		ev     Event
		checks []check
	}{
		{"jti", Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: now + 3600}, []check{
			{"the token", denyToken(nil), true},
			{"no other field matters", Token{Issuer: denyIss, ID: "jti_1"}, true},
			{"other jti", denyToken(func(t *Token) { t.ID = "jti_2" }), false},
			{"same jti, other iss", denyToken(func(t *Token) { t.Issuer = denyOtherIss }), false},
			{"no jti", denyToken(func(t *Token) { t.ID = "" }), false},
			{"jti as a prefix", denyToken(func(t *Token) { t.ID = "jti_" }), false},
			{"iss/jti split elsewhere", denyToken(func(t *Token) { t.Issuer, t.ID = denyIss+"j", "ti_1" }), false},
		}},
		{"sub cutoff", Event{Kind: KindSub, Iss: denyIss, Value: "usr_1", IssuedBefore: now}, []check{
			{"iat before the cutoff", denyToken(nil), true},
			{"iat a fraction before", denyToken(func(t *Token) { t.IssuedAt = float64(now) - 0.5 }), true},
			{"no iat: fail closed", denyToken(func(t *Token) { t.IssuedAt = 0 }), true},
			{"iat NaN: fail closed", denyToken(func(t *Token) { t.IssuedAt = math.NaN() }), true},
			{"iat equal to the cutoff", denyToken(func(t *Token) { t.IssuedAt = float64(now) }), false},
			{"iat after the cutoff", denyToken(func(t *Token) { t.IssuedAt = float64(now + 1) }), false},
			{"other sub", denyToken(func(t *Token) { t.Subject = "usr_2" }), false},
			{"same sub, other iss", denyToken(func(t *Token) { t.Issuer = denyOtherIss }), false},
			{"no sub", denyToken(func(t *Token) { t.Subject = "" }), false},
		}},
		{"kid", Event{Kind: KindKid, Iss: denyIss, Value: "key_1"}, []check{
			{"signed by it", denyToken(nil), true},
			{"signed by it, no iat", denyToken(func(t *Token) { t.IssuedAt = 0 }), true},
			{"other kid", denyToken(func(t *Token) { t.KeyID = "key_2" }), false},
			{"same kid, other iss", denyToken(func(t *Token) { t.Issuer = denyOtherIss }), false},
			{"no kid", denyToken(func(t *Token) { t.KeyID = "" }), false},
		}},
		{"a value of one kind does not match another", Event{Kind: KindJTI, Iss: denyIss, Value: "shared"}, []check{
			{"as sub", denyToken(func(t *Token) { t.Subject = "shared"; t.IssuedAt = 0 }), false},
			{"as kid", denyToken(func(t *Token) { t.KeyID = "shared" }), false},
			{"as jti", denyToken(func(t *Token) { t.ID = "shared" }), true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := denyNew(t, denyNewClock(), Options{})
			denyCheck(t, d, "before the event", denyToken(nil), false)
			denyApply(t, d, tc.ev, true)
			for _, c := range tc.checks {
				denyCheck(t, d, c.name, c.tok, c.revoked)
			}
			// A rebuild changes nothing that is live.
			d.Rebuild()
			for _, c := range tc.checks {
				denyCheck(t, d, "after rebuild: "+c.name, c.tok, c.revoked)
			}
		})
	}
}

// TestDenylistApplyRefuses: events that cannot revoke anything change
// nothing.
func TestDenylistApplyRefuses(t *testing.T) {
	clock := denyNewClock()
	now := clock.unix()
	for _, ev := range []Event{
		{Kind: "aud", Iss: denyIss, Value: "x"},
		{Kind: KindJTI, Iss: denyIss, Value: ""},
		{Kind: KindJTI, Iss: denyIss, Value: "dead", Exp: now - int64(denyLeeway/time.Second)},
		{Kind: KindSub, Iss: denyIss, Value: "usr_1"}, // no cutoff
		{Kind: KindSub, Iss: denyIss, Value: "usr_1", IssuedBefore: now - int64((denyMaxLife+denyLeeway)/time.Second)},
	} {
		d, _ := denyNew(t, clock, Options{})
		denyApply(t, d, ev, false)
		for _, k := range []Kind{KindJTI, KindSub, KindKid, "aud"} {
			if n := d.Len(k); n != 0 {
				t.Errorf("%+v: Len(%s) = %d, want 0", ev, k, n)
			}
		}
	}
}

// TestDenylistNeverLifts: applying again is harmless, and nothing can
// shorten or lift a revocation.
func TestDenylistNeverLifts(t *testing.T) {
	clock := denyNewClock()
	now := clock.unix()
	d, _ := denyNew(t, clock, Options{})
	tok := denyToken(nil)

	late := Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: now + 7200}
	denyApply(t, d, late, true)
	denyApply(t, d, late, false)
	denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: now + 3600}, false)
	clock.set(denyTestNow.Add(time.Hour + denyLeeway + time.Second))
	denyCheck(t, d, "past the earlier exp", tok, true)
	clock.set(denyTestNow.Add(2*time.Hour + denyLeeway))
	denyCheck(t, d, "past the later exp", tok, false)
	clock.set(denyTestNow)
	denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: now + 3*3600}, true)
	clock.set(denyTestNow.Add(2*time.Hour + denyLeeway))
	denyCheck(t, d, "an exp moved later", tok, true)
	clock.set(denyTestNow)

	sub := func(cutoff int64) Event {
		return Event{Kind: KindSub, Iss: denyIss, Value: "usr_2", IssuedBefore: cutoff}
	}
	iat := func(at int64) Token {
		return Token{Issuer: denyIss, Subject: "usr_2", IssuedAt: float64(at)}
	}
	denyApply(t, d, sub(now), true)
	denyApply(t, d, sub(now), false)
	denyApply(t, d, sub(now-3600), false)
	denyCheck(t, d, "iat between the two cutoffs", iat(now-1800), true)
	denyApply(t, d, sub(now+3600), true)
	denyCheck(t, d, "iat before the later cutoff", iat(now+1800), true)
	denyCheck(t, d, "iat after the later cutoff", iat(now+3600), false)

	kid := Event{Kind: KindKid, Iss: denyIss, Value: "key_9"}
	denyApply(t, d, kid, true)
	denyApply(t, d, kid, false)

	for k, want := range map[Kind]int{KindJTI: 1, KindSub: 1, KindKid: 1} {
		if n := d.Len(k); n != want {
			t.Errorf("Len(%s) = %d, want %d", k, n, want)
		}
	}
}

// TestDenylistExpiry: an entry stops matching the moment no token it could
// match is still accepted, before any rebuild; the rebuild then drops it.
func TestDenylistExpiry(t *testing.T) {
	cases := []struct {
		name string
		ev   Event
		tok  Token
		// lives is how long after denyTestNow the entry matches.
		lives time.Duration
	}{
		{"jti: exp plus leeway",
			Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: denyTestNow.Add(10 * time.Minute).Unix()},
			denyToken(nil), 10*time.Minute + denyLeeway},
		// A token accepted now has exp <= now + max lifetime + leeway, and
		// is accepted until that exp plus the leeway.
		{"jti without exp: max lifetime from now, plus twice the leeway",
			Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1"},
			denyToken(nil), denyMaxLife + 2*denyLeeway},
		{"sub: cutoff plus max lifetime plus leeway",
			Event{Kind: KindSub, Iss: denyIss, Value: "usr_1", IssuedBefore: denyTestNow.Add(-time.Hour).Unix()},
			denyToken(func(t *Token) { t.IssuedAt = float64(denyTestNow.Add(-2 * time.Hour).Unix()) }),
			denyMaxLife - time.Hour + denyLeeway},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := denyNewClock()
			d, _ := denyNew(t, clock, Options{})
			denyApply(t, d, tc.ev, true)
			clock.set(denyTestNow.Add(tc.lives - time.Second))
			denyCheck(t, d, "a second before", tc.tok, true)
			d.Rebuild()
			if n := d.Len(tc.ev.Kind); n != 1 {
				t.Fatalf("a live entry: Len = %d after Rebuild, want 1", n)
			}
			denyCheck(t, d, "a second before, rebuilt", tc.tok, true)
			clock.set(denyTestNow.Add(tc.lives))
			denyCheck(t, d, "at expiry, before a rebuild", tc.tok, false)
			if n := d.Len(tc.ev.Kind); n != 1 {
				t.Fatalf("before Rebuild: Len = %d, want 1", n)
			}
			d.Rebuild()
			if n := d.Len(tc.ev.Kind); n != 0 {
				t.Fatalf("after Rebuild: Len = %d, want 0", n)
			}
			denyCheck(t, d, "after rebuild", tc.tok, false)
			// Applying it again now is too late to matter.
			if tc.ev.Exp != 0 || tc.ev.Kind == KindSub {
				denyApply(t, d, tc.ev, false)
			}
		})
	}

	t.Run("kid never expires", func(t *testing.T) {
		clock := denyNewClock()
		d, _ := denyNew(t, clock, Options{})
		denyApply(t, d, Event{Kind: KindKid, Iss: denyIss, Value: "key_1"}, true)
		clock.advance(10 * 365 * 24 * time.Hour)
		d.Rebuild()
		denyCheck(t, d, "ten years on", denyToken(nil), true)
	})

	t.Run("huge exp and cutoff saturate", func(t *testing.T) {
		clock := denyNewClock()
		d, _ := denyNew(t, clock, Options{})
		denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: math.MaxInt64}, true)
		denyApply(t, d, Event{Kind: KindSub, Iss: denyIss, Value: "usr_1", IssuedBefore: math.MaxInt64}, true)
		clock.advance(50 * 365 * 24 * time.Hour)
		d.Rebuild()
		denyCheck(t, d, "jti", Token{Issuer: denyIss, ID: "jti_1"}, true)
		denyCheck(t, d, "sub", Token{Issuer: denyIss, Subject: "usr_1", IssuedAt: float64(clock.unix())}, true)
	})
}

// TestDenylistFalsePositivesNeverDeny: with a filter far too small to tell
// tokens apart, the exact set still decides.
func TestDenylistFalsePositivesNeverDeny(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{Capacity: 10, FalsePositiveRate: 0.5})
	const revoked, others = 10_000, 100_000
	for i := range revoked {
		denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: fmt.Sprintf("rev-%d", i), Exp: clock.unix() + 3600}, true)
	}
	for i := range 100 {
		denyApply(t, d, Event{Kind: KindSub, Iss: denyIss, Value: fmt.Sprintf("banned-%d", i), IssuedBefore: clock.unix()}, true)
		denyApply(t, d, Event{Kind: KindKid, Iss: denyIss, Value: fmt.Sprintf("leaked-%d", i)}, true)
	}
	for pass, rebuild := range []bool{false, true} {
		if rebuild {
			d.Rebuild()
		}
		rng := rand.New(rand.NewPCG(1, uint64(pass)))
		s := d.state.Load()
		hits := 0
		for range others {
			tok := Token{
				Issuer:   denyIss,
				ID:       fmt.Sprintf("ok-%016x", rng.Uint64()),
				Subject:  fmt.Sprintf("user-%x", rng.Uint64()),
				KeyID:    fmt.Sprintf("key-%x", rng.Uint32()),
				IssuedAt: float64(clock.unix() - 60),
			}
			if s.filters[denyJTI].test(d.key0(denyJTI, d.issHash(0, tok.Issuer), tok.ID)) {
				hits++
			}
			if d.Revoked(tok) {
				t.Fatalf("rebuilt=%v: a token never revoked is denied: %+v", rebuild, tok)
			}
		}
		// The test is only worth something if the filter lets many through
		// to the exact set.
		if hits < others/10 {
			t.Fatalf("rebuilt=%v: the filter said maybe for only %d of %d jtis; the exact set was barely exercised", rebuild, hits, others)
		}
		t.Logf("rebuilt=%v: filter false positives %d/%d", rebuild, hits, others)
		for i := range revoked {
			if !d.Revoked(Token{Issuer: denyIss, ID: fmt.Sprintf("rev-%d", i)}) {
				t.Fatalf("rebuilt=%v: revoked jti rev-%d passes", rebuild, i)
			}
		}
		for i := range 100 {
			if !d.Revoked(Token{Issuer: denyIss, Subject: fmt.Sprintf("banned-%d", i)}) ||
				!d.Revoked(Token{Issuer: denyIss, KeyID: fmt.Sprintf("leaked-%d", i)}) {
				t.Fatalf("rebuilt=%v: revoked sub or kid %d passes", rebuild, i)
			}
		}
	}
}

// TestDenylistGrowth: far past its capacity the denylist keeps every entry,
// and its filter grows with it.
func TestDenylistGrowth(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{Capacity: 100})
	const n = 50_000
	exp := clock.unix() + 3600
	for i := range n {
		denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: fmt.Sprintf("jti-%d", i), Exp: exp}, true)
	}
	check := func(when string) {
		t.Helper()
		if got := d.Len(KindJTI); got != n {
			t.Fatalf("%s: Len = %d, want %d", when, got, n)
		}
		for i := range n {
			if !d.Revoked(Token{Issuer: denyIss, ID: fmt.Sprintf("jti-%d", i)}) {
				t.Fatalf("%s: jti-%d was lost", when, i)
			}
		}
		if f := d.state.Load().filters[denyJTI]; f.n < n {
			t.Fatalf("%s: the filter is sized for %d entries, holding %d", when, f.n, n)
		}
	}
	check("after applying")
	d.Rebuild()
	check("after a rebuild")
	// Once the entries expire, the rebuild shrinks back to capacity.
	clock.advance(2 * time.Hour)
	d.Rebuild()
	if got, f := d.Len(KindJTI), d.state.Load().filters[denyJTI]; got != 0 || f.n != 100 {
		t.Fatalf("after expiry: Len = %d, filter sized for %d; want 0 and 100", got, f.n)
	}
}

// TestDenylistConcurrent: lookups from many goroutines while two writers
// apply events and rebuilds run. Run it with -race.
func TestDenylistConcurrent(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{Capacity: 64})
	exp := clock.unix() + 3600
	const before = 500
	for i := range before {
		denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: fmt.Sprintf("old-%d", i), Exp: exp}, true)
	}
	denyApply(t, d, Event{Kind: KindSub, Iss: denyIss, Value: "banned", IssuedBefore: clock.unix()}, true)

	const writers, perWriter, readers = 2, 3000, 8
	stop := make(chan struct{})
	var wg, rw sync.WaitGroup
	var lookups atomic.Int64
	for r := range readers {
		rw.Add(1)
		go func() {
			defer rw.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !d.Revoked(Token{Issuer: denyIss, ID: fmt.Sprintf("old-%d", (i+r)%before)}) {
					t.Errorf("an entry applied before the start passes")
					return
				}
				if !d.Revoked(Token{Issuer: denyIss, Subject: "banned", IssuedAt: float64(clock.unix() - 1)}) {
					t.Errorf("the banned subject passes")
					return
				}
				if d.Revoked(Token{Issuer: denyIss, ID: fmt.Sprintf("never-%d", i), Subject: "fine", KeyID: "k"}) {
					t.Errorf("a token never revoked is denied")
					return
				}
				lookups.Add(3)
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				ev := Event{Kind: KindJTI, Iss: denyIss, Value: fmt.Sprintf("new-%d-%d", w, i), Exp: exp}
				if !d.Apply(ev) {
					t.Errorf("Apply(%s) changed nothing", ev.Value)
				}
				if i%100 == 0 {
					d.Apply(Event{Kind: KindKid, Iss: denyIss, Value: fmt.Sprintf("kid-%d-%d", w, i)})
				}
			}
		}()
	}
	writersDone := make(chan struct{})
	rebuilds := 0
	rebuilt := make(chan struct{})
	go func() {
		defer close(rebuilt)
		for {
			select {
			case <-writersDone:
				return
			default:
				d.Rebuild()
				rebuilds++
			}
		}
	}()
	wg.Wait()
	close(writersDone)
	<-rebuilt
	close(stop)
	rw.Wait()
	t.Logf("%d lookups and %d rebuilds during the writes", lookups.Load(), rebuilds)

	if got, want := d.Len(KindJTI), before+writers*perWriter; got != want {
		t.Fatalf("Len(jti) = %d, want %d", got, want)
	}
	d.Rebuild()
	for w := range writers {
		for i := range perWriter {
			if !d.Revoked(Token{Issuer: denyIss, ID: fmt.Sprintf("new-%d-%d", w, i)}) {
				t.Fatalf("new-%d-%d, applied during rebuilds, was lost", w, i)
			}
		}
	}
}

// TestDenylistMetrics reads sidegate_revocation_entries from the test's
// registry.
func TestDenylistMetrics(t *testing.T) {
	clock := denyNewClock()
	d, reg := denyNew(t, clock, Options{})
	want := func(jti, sub, kid int) {
		t.Helper()
		exp := fmt.Sprintf(`
# HELP sidegate_revocation_entries Revocations held in the denylist, by kind (jti, sub, kid); expired ones count until the next rebuild drops them.
# TYPE sidegate_revocation_entries gauge
sidegate_revocation_entries{kind="jti"} %d
sidegate_revocation_entries{kind="kid"} %d
sidegate_revocation_entries{kind="sub"} %d
`, jti, kid, sub)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "sidegate_revocation_entries"); err != nil {
			t.Fatal(err)
		}
	}
	want(0, 0, 0)
	now := clock.unix()
	d.Apply(Event{Kind: KindJTI, Iss: denyIss, Value: "a", Exp: now + 60})
	d.Apply(Event{Kind: KindJTI, Iss: denyIss, Value: "b", Exp: now + 3600})
	d.Apply(Event{Kind: KindSub, Iss: denyIss, Value: "u", IssuedBefore: now})
	d.Apply(Event{Kind: KindKid, Iss: denyIss, Value: "k"})
	d.Apply(Event{Kind: KindKid, Iss: denyOtherIss, Value: "k"})
	want(2, 1, 2)
	clock.advance(2 * time.Minute)
	d.Rebuild()
	want(1, 1, 2)
}

func TestNewDenylistOptions(t *testing.T) {
	for _, opts := range []Options{
		{Capacity: -1},
		{FalsePositiveRate: 1},
		{FalsePositiveRate: -0.1},
		{FalsePositiveRate: math.NaN()},
		{MaxLifetime: -time.Second},
		{Leeway: -time.Second},
		{RebuildInterval: -time.Second},
	} {
		if _, err := NewDenylist(opts); err == nil {
			t.Errorf("NewDenylist(%+v) accepted", opts)
		}
	}
	d, err := NewDenylist(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.capacity != 1_000_000 || d.fpRate != 0.001 || d.maxLife != 86400 || d.leeway != 30 || d.interval != time.Minute {
		t.Errorf("defaults: capacity %d, fp %v, max lifetime %ds, leeway %ds, interval %s", d.capacity, d.fpRate, d.maxLife, d.leeway, d.interval)
	}
	reg := prometheus.NewRegistry()
	if _, err := NewDenylist(Options{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDenylist(Options{Registerer: reg}); err == nil {
		t.Error("a second denylist on the same registry registered its metric twice")
	}
}

// TestDenylistRun: Run rebuilds on its interval and returns nil when its
// context ends.
func TestDenylistRun(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{RebuildInterval: time.Millisecond})
	denyApply(t, d, Event{Kind: KindJTI, Iss: denyIss, Value: "jti_1", Exp: clock.unix() + 60}, true)
	clock.advance(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for d.Len(KindJTI) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not drop the expired entry")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

// TestBloomFilter: no false negatives, and a false-positive rate near the
// one it was sized for.
func TestBloomFilter(t *testing.T) {
	for _, tc := range []struct {
		n int
		p float64
	}{{1000, 0.01}, {10_000, 0.001}, {10, 0.5}} {
		c, k := bloomSizing(tc.p)
		f := bloomNew(tc.n, c, k)
		rng := rand.New(rand.NewPCG(7, uint64(tc.n)))
		keys := make([]uint64, tc.n)
		for i := range keys {
			keys[i] = rng.Uint64()
			f.add(keys[i])
		}
		for _, k := range keys {
			if !f.test(k) {
				t.Fatalf("n=%d: an added key tests absent", tc.n)
			}
		}
		const trials = 200_000
		fp := 0
		for range trials {
			if f.test(rng.Uint64()) {
				fp++
			}
		}
		// Within four standard deviations of p.
		rate := float64(fp) / trials
		if sd := math.Sqrt(tc.p * (1 - tc.p) / trials); rate > tc.p+4*sd {
			t.Errorf("n=%d p=%v: measured false-positive rate %.5f", tc.n, tc.p, rate)
		}
		t.Logf("n=%d p=%v: %.2f bits per key, k=%d, measured rate %.5f", tc.n, tc.p, c, k, rate)
	}
}

// TestDenylistApplyDuringRebuild: what Apply does while a rebuild copies the
// table, growth included, is in the rebuilt table.
func TestDenylistApplyDuringRebuild(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{Capacity: 64})
	exp := clock.unix() + 3600
	jti := func(name string, exp int64) Event {
		return Event{Kind: KindJTI, Iss: denyIss, Value: name, Exp: exp}
	}
	for i := range 40 {
		denyApply(t, d, jti(fmt.Sprintf("pre-%d", i), exp), true)
	}
	denyApply(t, d, jti("short", clock.unix()+60), true)
	clock.advance(5 * time.Minute)

	const mid = 500
	swapped := false
	d.testHookRebuild = func() {
		before := d.state.Load()
		// Enough to outgrow the state the rebuild will make, and the one
		// Apply grows meanwhile.
		for i := range mid {
			denyApply(t, d, jti(fmt.Sprintf("mid-%d", i), exp), true)
		}
		denyApply(t, d, jti("pre-0", exp+7200), true)
		denyApply(t, d, Event{Kind: KindKid, Iss: denyIss, Value: "key_1"}, true)
		swapped = d.state.Load() != before
	}
	d.Rebuild()
	if !swapped {
		t.Fatal("Apply did not grow the state during the rebuild; the test lost its point")
	}
	if got, want := d.Len(KindJTI), 40+mid; got != want {
		t.Fatalf("Len(jti) = %d, want %d", got, want)
	}
	for i := range 40 {
		denyCheck(t, d, "pre", Token{Issuer: denyIss, ID: fmt.Sprintf("pre-%d", i)}, true)
	}
	for i := range mid {
		denyCheck(t, d, "mid", Token{Issuer: denyIss, ID: fmt.Sprintf("mid-%d", i)}, true)
	}
	denyCheck(t, d, "kid", Token{Issuer: denyIss, KeyID: "key_1"}, true)
	clock.set(time.Unix(exp+int64(denyLeeway/time.Second)+60, 0))
	denyCheck(t, d, "pre-0 extended during the rebuild", Token{Issuer: denyIss, ID: "pre-0"}, true)
	denyCheck(t, d, "pre-1 past its exp", Token{Issuer: denyIss, ID: "pre-1"}, false)
}

// TestDenylistBuildOutgrown: entries that land in the old table after build
// counted the live ones make the new table grow instead of overflowing it.
func TestDenylistBuildOutgrown(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{Capacity: 1 << 20})
	exp := clock.unix() + 7200
	entry := func(v string, exp int64) denyEntry {
		return d.entry(denyJTI, denyIss, v, uint32(exp))
	}
	// A big old table, mostly expired: the new one is sized for 10.
	old := d.newState([denyKinds]int{denyJTI: 400})
	for i := range 10 {
		old.insert(entry(fmt.Sprintf("a-%d", i), exp), true)
	}
	for i := range 300 {
		old.insert(entry(fmt.Sprintf("gone-%d", i), clock.unix()+60), true)
	}
	clock.advance(time.Hour)
	var late []denyEntry
	d.testHookBuild = func(s *denyState) {
		d.testHookBuild = nil
		for i := 0; i < 100 && !s.full(); i++ {
			e := entry(fmt.Sprintf("b-%d", i), exp)
			late = append(late, e)
			s.insert(e, false)
		}
	}
	s := d.build(old, clock.unix())
	if len(late) <= denyMinSlots {
		t.Fatalf("only %d late entries; not enough to overflow the new table", len(late))
	}
	if got, want := s.count[denyJTI].Load(), int64(10+len(late)); got != want {
		t.Fatalf("the new state holds %d entries, want %d", got, want)
	}
	for _, e := range late {
		if _, ok := s.lookup(s.slot(e.k0), s.slots[s.slot(e.k0)].k0.Load(), e.k0, e.k1); !ok {
			t.Fatal("an entry added during the build was lost")
		}
	}
}

// TestDenylistManyIssuers: past the listed issuers, lookups hash the
// issuer instead, and every issuer's entries still match.
func TestDenylistManyIssuers(t *testing.T) {
	clock := denyNewClock()
	d, _ := denyNew(t, clock, Options{})
	iss := func(i int) string { return fmt.Sprintf("https://idp%d.example.com/", i) }
	const n = 3 * denyMaxIssuers
	for i := range n {
		if i == denyMaxIssuers && d.manyIssuers.Load() {
			t.Fatalf("manyIssuers set with %d issuers", i)
		}
		denyApply(t, d, Event{Kind: KindJTI, Iss: iss(i), Value: "jti_1"}, true)
		denyApply(t, d, Event{Kind: KindJTI, Iss: iss(i), Value: "jti_1", Exp: clock.unix() + 60}, false)
	}
	if !d.manyIssuers.Load() {
		t.Fatalf("manyIssuers not set with %d issuers", n)
	}
	for i := range n {
		denyCheck(t, d, iss(i), Token{Issuer: iss(i), ID: "jti_1"}, true)
		denyCheck(t, d, iss(i)+", other jti", Token{Issuer: iss(i), ID: "jti_2"}, false)
	}
	denyCheck(t, d, "an issuer without entries", Token{Issuer: iss(n), ID: "jti_1"}, false)
}
