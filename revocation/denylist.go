package revocation

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Denylist. Zero values take the defaults.
type Options struct {
	// Capacity is the number of entries the bloom filter is sized for
	// (default 1,000,000). Past it the filter is rebuilt bigger; no entry
	// is ever lost.
	Capacity int
	// FalsePositiveRate of the filter at Capacity (default 0.001). A false
	// positive costs an exact-set lookup, never a wrong denial.
	FalsePositiveRate float64
	// MaxLifetime is tokens.max_lifetime (default 24h): the longest a token
	// lives, which bounds how long a jti without exp and a subject cutoff
	// must be kept.
	MaxLifetime time.Duration
	// Leeway is tokens.leeway (default 30s): a token is accepted until its
	// exp plus the leeway, so its entry is kept as long. Zero cannot be told
	// from unset and means 30s too: entries then outlive their tokens by
	// 30s, which costs nothing.
	Leeway time.Duration
	// RebuildInterval is how often Run drops expired entries and rebuilds
	// the filter (default 1m).
	RebuildInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Registerer receives sidegate_revocation_entries; nil keeps the metric
	// in a private registry.
	Registerer prometheus.Registerer
}

// Denylist holds revocations in memory: a bloom filter in front of an exact
// set, both read without locks on the request path.
//
// Every entry, whatever its kind, lives in one open-addressing hash table
// (linear probing) keyed by a 128-bit hash of (kind, iss, value), with a
// 32-bit value: the expiry of a jti entry, the cutoff of a subject,
// nothing for a kid. Its slots are atomic words that the writer fills in
// an order that lets readers probe them lock-free while it writes, so a
// new revocation goes straight into the live table and filter, with no
// copy and no delta map. Entries are never deleted in place: Rebuild (and
// growth) builds a fresh table and filter from the live entries and swaps
// them in with an atomic pointer store.
//
// The miss path of Revoked, the common one, is a comparison of the issuer
// with the few that have entries (their hashes are kept), a hash of the
// jti, and one cache line of the filter. Only a filter hit hashes again
// (for the second 64 bits of the key), probes the table and reads the
// clock. Subject and kid lookups are skipped while none is revoked, and
// each kind has its own filter, so the few subjects' and kids' filters
// stay in cache.
//
// Writers are serialized by a mutex that readers never take. Apply is
// O(1), except when its entry makes the table or the filter outgrow their
// size: it then rebuilds them bigger (geometrically, about 50 ms at 1M
// entries) before returning.
type Denylist struct {
	capacity int
	fpRate   float64
	// the filter's bits per key and bits set per key, for fpRate
	bloomBits float64
	bloomK    int
	maxLife   int64 // seconds, rounded up
	leeway    int64 // seconds, rounded up
	interval  time.Duration
	now       func() time.Time
	// seeds of the two 64-bit halves of an entry's key: [half][0] hashes
	// iss, [half][1+kind] the value. They are random per process, so
	// nobody outside can aim a jti at a revoked one's hash or at a long
	// probe chain.
	seeds [2][1 + denyKinds]maphash.Seed

	state atomic.Pointer[denyState]

	// issuers lists the issuers of the entries ever applied, with their
	// hashes, up to denyMaxIssuers: a token of another issuer cannot be
	// revoked, and one of these needs no hashing of its issuer. Once more
	// issuers have come, manyIssuers is set and lookups of issuers not
	// listed hash them. The list is copied on write.
	issuers     atomic.Pointer[[]denyIssuer]
	manyIssuers atomic.Bool

	// mu serializes writers: Apply, growth, and the start and end of a
	// rebuild. Readers never take it.
	mu sync.Mutex
	// pending records, while a rebuild runs with mu released, the entries
	// Apply changed, so that the rebuilt state can be brought up to date
	// before it is swapped in; nil when no rebuild runs.
	pending []denyEntry
	// rebuild allows one Rebuild at a time.
	rebuild sync.Mutex

	// Tests set these to act at the points where a rebuild races with
	// Apply: once the rebuild has taken its snapshot, and between build's
	// count of the live entries and its copy of them.
	testHookRebuild func()
	testHookBuild   func(old *denyState)
}

// Entry kinds, as stored in the high half of an entry's v.
const (
	denyJTI = iota
	denySub
	denyKid
	denyKinds
)

var denyKindNames = [denyKinds]Kind{KindJTI, KindSub, KindKid}

func denyKindIndex(k Kind) (uint64, bool) {
	switch k {
	case KindJTI:
		return denyJTI, true
	case KindSub:
		return denySub, true
	case KindKid:
		return denyKid, true
	}
	return 0, false
}

// denyIssuer is an issuer that has entries, with the hashes of it that
// start the two halves of its entries' keys.
type denyIssuer struct {
	iss    string
	h0, h1 uint64
}

// denyMaxIssuers is how many issuers are listed; real deployments have a
// handful, and a lookup compares the token's issuer with each.
const denyMaxIssuers = 8

// Table sizing: a rebuilt table is 60% full; it grows (is rebuilt) once
// 85% full, so a probe always ends at an empty slot.
const (
	denyMinSlots = 64
	denyLoadPct  = 60
	denyMaxPct   = 85
	// denySmallFilter is what the subject and kid filters are sized for
	// until they hold more: 2 KiB each.
	denySmallFilter = 1024
)

// NewDenylist returns an empty denylist and registers its metric.
func NewDenylist(opts Options) (*Denylist, error) {
	if opts.Capacity == 0 {
		opts.Capacity = 1_000_000
	}
	if opts.FalsePositiveRate == 0 {
		opts.FalsePositiveRate = 0.001
	}
	if opts.MaxLifetime == 0 {
		opts.MaxLifetime = 24 * time.Hour
	}
	if opts.Leeway == 0 {
		opts.Leeway = 30 * time.Second
	}
	if opts.RebuildInterval == 0 {
		opts.RebuildInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	var errs []error
	if opts.Capacity < 0 {
		errs = append(errs, fmt.Errorf("revocation: capacity %d is negative", opts.Capacity))
	}
	if !(opts.FalsePositiveRate > 0 && opts.FalsePositiveRate < 1) {
		errs = append(errs, fmt.Errorf("revocation: false-positive rate %v is not between 0 and 1", opts.FalsePositiveRate))
	}
	if opts.MaxLifetime < 0 || opts.Leeway < 0 || opts.RebuildInterval < 0 {
		errs = append(errs, errors.New("revocation: max lifetime, leeway and rebuild interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d := &Denylist{
		capacity: opts.Capacity,
		fpRate:   opts.FalsePositiveRate,
		maxLife:  denySeconds(opts.MaxLifetime),
		leeway:   denySeconds(opts.Leeway),
		interval: opts.RebuildInterval,
		now:      opts.Now,
	}
	d.bloomBits, d.bloomK = bloomSizing(d.fpRate)
	for i := range d.seeds {
		for j := range d.seeds[i] {
			d.seeds[i][j] = maphash.MakeSeed()
		}
	}
	d.state.Store(d.newState([denyKinds]int{}))
	if err := opts.Registerer.Register(denyNewCollector(d)); err != nil {
		return nil, fmt.Errorf("revocation: register metrics: %w", err)
	}
	return d, nil
}

// denySeconds rounds a duration up to whole seconds, so that an entry is
// never dropped earlier than asked.
func denySeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// Apply adds an event's revocation. It is idempotent and can only extend
// what is revoked: a jti keeps its latest expiry, a subject its latest
// cutoff, a kid stays revoked. An event whose entry would already be
// expired, or of an unknown kind, changes nothing. Apply reports whether
// anything changed.
//
// A jti without exp is kept for the longest a token accepted now can live:
// its exp can be at most now + max lifetime + leeway (a later iat, or no
// iat, is refused by the lifetime check), and it is accepted until that exp
// plus the leeway.
func (d *Denylist) Apply(ev Event) bool {
	kind, ok := denyKindIndex(ev.Kind)
	if !ok || ev.Value == "" {
		return false
	}
	now := d.now().Unix()
	var val int64
	switch kind {
	case denyJTI:
		exp := ev.Exp
		if exp <= 0 {
			exp = denyAdd(now, d.maxLife+d.leeway)
		}
		val = denyAdd(exp, d.leeway)
		if val <= now {
			return false
		}
	case denySub:
		if ev.IssuedBefore <= 0 || d.subExpiry(min(ev.IssuedBefore, math.MaxUint32)) <= now {
			return false
		}
		val = ev.IssuedBefore
	}
	e := d.entry(kind, ev.Iss, ev.Value, uint32(min(val, math.MaxUint32)))
	d.mu.Lock()
	defer d.mu.Unlock()
	// The issuer first: a reader that finds the entry finds its issuer.
	d.addIssuer(ev.Iss)
	s := d.state.Load()
	if !s.insert(e, false) {
		return false
	}
	if d.pending != nil {
		d.pending = append(d.pending, e)
	}
	if s.full() {
		d.state.Store(d.build(s, now))
	}
	return true
}

// Revoked reports whether a verified token is revoked: its (iss, jti), a
// cutoff of its (iss, sub) later than its iat (a token without iat is
// under any cutoff: fail closed), or its (iss, kid). Expired entries never
// match, even before the rebuild that drops them. It takes no lock and
// does not allocate.
func (d *Denylist) Revoked(t Token) bool {
	s := d.state.Load()
	jti := t.ID != "" && s.count[denyJTI].Load() > 0
	sub := t.Subject != "" && s.count[denySub].Load() > 0
	kid := t.KeyID != "" && s.count[denyKid].Load() > 0
	if !jti && !sub && !kid {
		return false
	}
	iss0, iss1, ok := d.issuerHashes(t.Issuer)
	if !ok {
		return false // no entry names this issuer
	}
	now := func() int64 {
		if t.Now != 0 {
			return t.Now
		}
		return d.now().Unix()
	}
	if jti {
		if exp, ok := d.find(s, denyJTI, iss0, iss1, t.ID); ok && now() < int64(exp) {
			return true
		}
	}
	if sub {
		if cutoff, ok := d.find(s, denySub, iss0, iss1, t.Subject); ok && now() < d.subExpiry(int64(cutoff)) {
			// Written so that a missing iat (0) and a NaN are revoked.
			if !(t.IssuedAt >= float64(cutoff)) {
				return true
			}
		}
	}
	if kid {
		if _, ok := d.find(s, denyKid, iss0, iss1, t.KeyID); ok {
			return true
		}
	}
	return false
}

// Len is the number of entries of a kind held, expired ones included
// until the next rebuild drops them.
func (d *Denylist) Len(k Kind) int {
	i, ok := denyKindIndex(k)
	if !ok {
		return 0
	}
	return int(d.state.Load().count[i].Load())
}

// Rebuild drops expired entries and rebuilds the table and the filter
// (sized for the entries left, at least Capacity) from the exact set, then
// swaps them in. Lookups are never blocked; Apply is blocked only at the
// start and for the swap, while the changes it made meanwhile are copied
// over.
func (d *Denylist) Rebuild() {
	d.rebuild.Lock()
	defer d.rebuild.Unlock()
	d.mu.Lock()
	old := d.state.Load()
	d.pending = []denyEntry{}
	d.mu.Unlock()
	if d.testHookRebuild != nil {
		d.testHookRebuild()
	}

	now := d.now().Unix()
	s := d.build(old, now)

	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.pending {
		s.insert(e, true)
		if s.full() {
			s = d.build(s, now)
		}
	}
	d.pending = nil
	d.state.Store(s)
}

// Run rebuilds every RebuildInterval until ctx ends, then returns nil.
func (d *Denylist) Run(ctx context.Context) error {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			d.Rebuild()
		}
	}
}

// subExpiry is when a cutoff can go: a token issued before it expires at
// the latest at cutoff + max lifetime, and is accepted until then plus the
// leeway.
func (d *Denylist) subExpiry(cutoff int64) int64 {
	return denyAdd(cutoff, d.maxLife+d.leeway)
}

// live reports whether an entry can still match a token at now.
func (d *Denylist) live(kind uint64, val uint32, now int64) bool {
	switch kind {
	case denyJTI:
		return now < int64(val)
	case denySub:
		return now < d.subExpiry(int64(val))
	}
	return true
}

// find looks a (kind, iss, value) up: the filter first, the table only if
// the filter says maybe. iss0 and iss1 are the issuer's hashes.
func (d *Denylist) find(s *denyState, kind, iss0, iss1 uint64, value string) (uint32, bool) {
	k0 := d.key0(kind, iss0, value)
	if !s.filters[kind].test(k0) {
		return 0, false
	}
	// Load the first slot before hashing for k1: its likely cache miss
	// then overlaps the hashing.
	i := s.slot(k0)
	first := s.slots[i].k0.Load()
	v, ok := s.lookup(i, first, k0, d.key1(kind, iss1, value))
	return uint32(v), ok
}

// An entry's key is two independent 64-bit hashes of (kind, iss, value),
// each the XOR of a hash of iss (issHash) and a hash of value under seeds
// of its own (one value seed per kind). Hashing the two strings apart
// needs no buffer and no separator, and cannot be fooled by moving bytes
// from iss to value; the issuer's hashes are kept in the issuer list.
// key0, never 0 (0 marks an empty slot), also feeds the filter.
func (d *Denylist) issHash(half int, iss string) uint64 { return maphash.String(d.seeds[half][0], iss) }

func (d *Denylist) key0(kind, iss0 uint64, value string) uint64 {
	return max(iss0^maphash.String(d.seeds[0][1+kind], value), 1)
}

func (d *Denylist) key1(kind, iss1 uint64, value string) uint64 {
	return iss1 ^ maphash.String(d.seeds[1][1+kind], value)
}

// entry is the table entry of (kind, iss, value) with its value.
func (d *Denylist) entry(kind uint64, iss, value string, val uint32) denyEntry {
	return denyEntry{
		k0: d.key0(kind, d.issHash(0, iss), value),
		k1: d.key1(kind, d.issHash(1, iss), value),
		v:  kind<<32 | uint64(val),
	}
}

// issuerHashes returns the hashes of iss, or false if no entry can name
// it.
func (d *Denylist) issuerHashes(iss string) (h0, h1 uint64, ok bool) {
	if list := d.issuers.Load(); list != nil {
		for i := range *list {
			if e := &(*list)[i]; e.iss == iss {
				return e.h0, e.h1, true
			}
		}
	}
	if d.manyIssuers.Load() {
		return d.issHash(0, iss), d.issHash(1, iss), true
	}
	return 0, 0, false
}

// addIssuer lists iss, or sets manyIssuers when the list is full. The
// caller holds mu.
func (d *Denylist) addIssuer(iss string) {
	if d.manyIssuers.Load() {
		return
	}
	var list []denyIssuer
	if p := d.issuers.Load(); p != nil {
		list = *p
	}
	for _, e := range list {
		if e.iss == iss {
			return
		}
	}
	if len(list) == denyMaxIssuers {
		d.manyIssuers.Store(true)
		return
	}
	next := append(slices.Clip(list), denyIssuer{iss: strings.Clone(iss), h0: d.issHash(0, iss), h1: d.issHash(1, iss)})
	d.issuers.Store(&next)
}

// denyAdd adds seconds without overflowing.
func denyAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// denyEntry is one entry on its way into a table: its key and its v, the
// kind in the high 32 bits and the value (jti expiry, sub cutoff) in the
// low 32. Within a key the kind is fixed, so a later value is a larger v.
type denyEntry struct {
	k0, k1, v uint64
}

func (e denyEntry) kind() uint64 { return e.v >> 32 }
func (e denyEntry) val() uint32  { return uint32(e.v) }

// denyState is one generation of the denylist: a table and its filters.
// Readers reach it through Denylist.state; only the writer (holding mu),
// or the rebuild that has not published it yet, changes it.
type denyState struct {
	slots []denySlot
	count [denyKinds]atomic.Int64
	// filters has one filter per kind, so that the few subject cutoffs
	// and kids have a small filter that stays in cache, instead of a
	// cache miss each in the big one of the jtis.
	filters [denyKinds]*bloomFilter
	// maxEntries is when the table must grow: past denyMaxPct of the
	// slots.
	maxEntries int
}

// denySlot is a table slot, 24 bytes, read in one cache line most of the
// time. The writer fills an empty slot with v, then k1, then k0; a reader
// that sees k0 set therefore sees the rest. v only ever grows, by one
// atomic store.
type denySlot struct {
	k0, k1, v atomic.Uint64 // k0 == 0: an empty slot
}

func (sl *denySlot) load() denyEntry {
	return denyEntry{k0: sl.k0.Load(), k1: sl.k1.Load(), v: sl.v.Load()}
}

// newState makes an empty state for live[kind] entries of each kind: the
// jti filter sized for Capacity, the others for denySmallFilter, each for
// twice its entries once past that; the table at denyLoadPct.
func (d *Denylist) newState(live [denyKinds]int) *denyState {
	s := &denyState{}
	total := 0
	for k, n := range live {
		size := min(d.capacity, denySmallFilter)
		if k == denyJTI {
			size = d.capacity
		}
		if n > size {
			size = 2 * n
		}
		s.filters[k] = bloomNew(size, d.bloomBits, d.bloomK)
		total += n
	}
	slots := max(total*100/denyLoadPct+1, denyMinSlots)
	s.slots = make([]denySlot, slots)
	s.maxEntries = slots * denyMaxPct / 100
	return s
}

// build makes a new state holding old's entries still live at now. old may
// be the published state, with Apply writing to it meanwhile: build reads
// it as a reader does, and Rebuild catches up from pending.
func (d *Denylist) build(old *denyState, now int64) *denyState {
	var live [denyKinds]int
	for i := range old.slots {
		if e := old.slots[i].load(); e.k0 != 0 && d.live(e.kind(), e.val(), now) {
			live[e.kind()]++
		}
	}
	s := d.newState(live)
	if d.testHookBuild != nil {
		d.testHookBuild(old)
	}
	for i := range old.slots {
		if e := old.slots[i].load(); e.k0 != 0 && d.live(e.kind(), e.val(), now) {
			s.insert(e, true)
			// Apply may have added entries since they were counted.
			if s.full() {
				s = d.build(s, now)
			}
		}
	}
	return s
}

// slot is where a key's probe sequence starts.
func (s *denyState) slot(k0 uint64) int {
	i, _ := bits.Mul64(k0, uint64(len(s.slots)))
	return int(i)
}

// lookup finds a key in the table, probing from slot i whose k0 is x, and
// returns its v.
func (s *denyState) lookup(i int, x, k0, k1 uint64) (uint64, bool) {
	for {
		if x == 0 {
			return 0, false
		}
		if x == k0 && s.slots[i].k1.Load() == k1 {
			return s.slots[i].v.Load(), true
		}
		if i++; i == len(s.slots) {
			i = 0
		}
		x = s.slots[i].k0.Load()
	}
}

// insert adds an entry, or raises the value of the one held, and reports
// whether it changed anything. private says no reader can see s yet.
func (s *denyState) insert(e denyEntry, private bool) bool {
	for i := s.slot(e.k0); ; {
		sl := &s.slots[i]
		x := sl.k0.Load()
		if x == 0 {
			sl.v.Store(e.v)
			sl.k1.Store(e.k1)
			sl.k0.Store(e.k0)
			// Filter bits after the slot: a filter hit always finds it.
			if private {
				s.filters[e.kind()].addPrivate(e.k0)
			} else {
				s.filters[e.kind()].add(e.k0)
			}
			s.count[e.kind()].Add(1)
			return true
		}
		if x == e.k0 && sl.k1.Load() == e.k1 {
			if e.v > sl.v.Load() {
				sl.v.Store(e.v)
				return true
			}
			return false
		}
		if i++; i == len(s.slots) {
			i = 0
		}
	}
}

// full reports whether s holds more entries than its table or one of its
// filters was sized for.
func (s *denyState) full() bool {
	var total int64
	for k := range s.count {
		n := s.count[k].Load()
		if n > int64(s.filters[k].n) {
			return true
		}
		total += n
	}
	return total > int64(s.maxEntries)
}
