package jwks

// SetIssuers: live reconfiguration. Every case runs against real
// jwkstest.Servers; background work is awaited by polling with
// testEventually, and "a loop no longer fetches" is measured in fetches of
// an issuer that is still configured (refresh intervals passing), never in
// wall-clock time.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// testSetIssuers calls SetIssuers and fails the test on an error.
func testSetIssuers(t *testing.T, c *Cache, issuers ...IssuerConfig) {
	t.Helper()
	if err := c.SetIssuers(issuers); err != nil {
		t.Fatalf("SetIssuers: %v", err)
	}
}

// testCurrent is Current at testNow, failing the test when kid is not served.
func testCurrent(t *testing.T, c *Cache, iss, kid string) *Key {
	t.Helper()
	k, ok := c.Current(iss, kid, testNow)
	if !ok {
		t.Fatalf("Current(%s, %q): not served", iss, kid)
	}
	return k
}

// testStatusIssuers lists the issuers of c.Status(), in its order.
func testStatusIssuers(c *Cache) []string {
	var out []string
	for _, st := range c.Status() {
		out = append(out, st.Issuer)
	}
	return out
}

// testIntervalsPass waits until the still-configured issuer served by s
// has been fetched n more times: n refresh intervals have passed for every
// loop that is still running.
func testIntervalsPass(t *testing.T, s *jwkstest.Server, n int) {
	t.Helper()
	from := s.Fetches()
	testEventually(t, fmt.Sprintf("%d more refreshes of %s", n, s.Issuer()), func() bool { return s.Fetches() >= from+n })
}

// testLoops is how many refresh loops Run has started and not stopped.
func testLoops(c *Cache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run == nil {
		return 0
	}
	return len(c.run.stops)
}

// An issuer added while Run runs has its loop started at once: its keys
// are fetched and served, and the issuer already configured is left alone.
func TestSetIssuersAddWhileRunning(t *testing.T) {
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	k2 := jwkstest.NewKey(t, "EdDSA", "k2")
	s1, s2 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, k2)
	// Refreshes an hour apart: every fetch below is a loop's first.
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s1)}, Options{RefreshInterval: time.Hour})
	testRun(t, c)
	testEventually(t, "the first issuer ready", func() bool { return len(c.Unready()) == 0 })
	key1 := testCurrent(t, c, s1.Issuer(), k1.Kid)
	if _, ok := testMetricSample(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s2.Issuer()}); ok {
		t.Fatal("a gauge for an issuer not yet configured")
	}

	// The new issuer's first fetch is held, so its state before the keys
	// arrive can be seen.
	s2.Hold()
	testSetIssuers(t, c, testDirect(s1), testDirect(s2))
	testEventually(t, "the added issuer's first fetch", func() bool { return s2.Fetches() == 1 })
	if got := c.Unready(); !slices.Equal(got, []string{s2.Issuer()}) {
		t.Errorf("Unready while the added issuer's first fetch runs = %q", got)
	}
	testWantErr(t, c, s2.Issuer(), k2.Kid, ErrKeysUnavailable)
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s2.Issuer()}, 0)
	testRefreshMetric(t, reg, s2.Issuer(), "success", 0)
	testRefreshMetric(t, reg, s2.Issuer(), "error", 0)

	s2.Release()
	testEventually(t, "the added issuer ready", func() bool { return len(c.Unready()) == 0 })
	testLookupVerifies(t, c, s2.Issuer(), k2)
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s2.Issuer()}, 1)
	testRefreshMetric(t, reg, s2.Issuer(), "success", 1)
	if got := testStatusIssuers(c); !slices.Equal(got, []string{s1.Issuer(), s2.Issuer()}) {
		t.Errorf("Status issuers = %q", got)
	}

	// The unchanged issuer: no refetch, the very same key.
	if n := s1.Fetches(); n != 1 {
		t.Errorf("the unchanged issuer was fetched %d times; want only its loop's first fetch", n)
	}
	if testCurrent(t, c, s1.Issuer(), k1.Kid) != key1 {
		t.Error("SetIssuers replaced the unchanged issuer's key")
	}
	if n := testLoops(c); n != 2 {
		t.Errorf("%d refresh loops running, want 2", n)
	}
}

// A removed issuer is forgotten at once and its loop stops, whether it was
// waiting for its next refresh or in the middle of a fetch.
func TestSetIssuersRemoveStopsLoop(t *testing.T) {
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	k2 := jwkstest.NewKey(t, "EdDSA", "k2")
	k3 := jwkstest.NewKey(t, "ES256", "k3")
	s1, s2, s3 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, k2), jwkstest.NewServer(t, k3)
	// s3's first fetch is held until the client gives up: its loop is
	// inside that fetch, and no other request of it can be on the way.
	s3.Hold()
	t.Cleanup(s3.Release)
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s1), testDirect(s2), testDirect(s3)}, Options{RefreshInterval: 20 * time.Millisecond})
	testRun(t, c)
	testEventually(t, "s1 and s2 refreshing, s3's fetch held", func() bool {
		return s1.Fetches() >= 2 && s2.Fetches() >= 2 && s3.Fetches() == 1
	})
	key1 := testCurrent(t, c, s1.Issuer(), k1.Kid)
	s2Errors := testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": s2.Issuer(), "outcome": "error"})
	s2Successes := testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": s2.Issuer(), "outcome": "success"})

	testSetIssuers(t, c, testDirect(s1))
	for _, tc := range []struct {
		s   *jwkstest.Server
		kid string
	}{{s2, k2.Kid}, {s3, k3.Kid}} {
		iss := tc.s.Issuer()
		testWantErr(t, c, iss, tc.kid, ErrUnknownIssuer)
		if k, ok := c.Current(iss, tc.kid, testNow); ok {
			t.Errorf("Current(%s) = %v after its removal", iss, k)
		}
		if err := c.Refresh(context.Background(), iss); !errors.Is(err, ErrUnknownIssuer) {
			t.Errorf("Refresh(%s) = %v after its removal, want ErrUnknownIssuer", iss, err)
		}
		for _, name := range []string{"sidegate_jwks_keys", "sidegate_jwks_last_success_timestamp_seconds"} {
			if v, ok := testMetricSample(t, reg, name, map[string]string{"issuer": iss}); ok {
				t.Errorf("%s{issuer=%q} = %v after its removal; want no series", name, iss, v)
			}
		}
	}
	if got := testStatusIssuers(c); !slices.Equal(got, []string{s1.Issuer()}) {
		t.Errorf("Status issuers = %q", got)
	}
	if got := c.Unready(); len(got) != 0 {
		t.Errorf("Unready = %q: a removed issuer still gates readiness", got)
	}
	if n := testLoops(c); n != 1 {
		t.Errorf("%d refresh loops registered, want 1", n)
	}

	// s2's loop may have had one request on the wire when it was removed;
	// after a few refresh intervals its count is final, and stays so.
	testIntervalsPass(t, s1, 3)
	n2 := s2.Fetches()
	// Released, s3's held fetch would be answered if anyone still waited
	// for it, and a loop still running would refetch every interval.
	s3.Release()
	testIntervalsPass(t, s1, 5)
	if n := s2.Fetches(); n != n2 {
		t.Errorf("the removed s2 was fetched %d more times", n-n2)
	}
	if n := s3.Fetches(); n != 1 {
		t.Errorf("the removed s3 was fetched %d times, want only its held first fetch", n)
	}
	// Counters stay, and a fetch cut short by the removal is no error.
	testRefreshMetric(t, reg, s2.Issuer(), "error", s2Errors)
	testRefreshMetric(t, reg, s2.Issuer(), "success", s2Successes)
	testRefreshMetric(t, reg, s3.Issuer(), "error", 0)
	testRefreshMetric(t, reg, s3.Issuer(), "success", 0)

	// The remaining issuer kept refreshing throughout, with the same key.
	testLookupVerifies(t, c, s1.Issuer(), k1)
	if testCurrent(t, c, s1.Issuer(), k1.Kid) != key1 {
		t.Error("the remaining issuer's key was replaced")
	}
}

// SetIssuers keeps everything about an unchanged issuer (keys, *Key
// values, remembered kids) and fetches nothing; a changed configuration
// replaces the issuer; an issuer added while Run is not running is fetched
// by the next Run.
func TestSetIssuersUnchangedAndChanged(t *testing.T) {
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	k2 := jwkstest.NewKey(t, "EdDSA", "k2")
	k3 := jwkstest.NewKey(t, "ES256", "k3")
	s1, s2, s3 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, k2), jwkstest.NewServer(t, k3)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s1), testDirect(s2)}, Options{})
	testRefresh(t, c, s1.Issuer())
	testRefresh(t, c, s2.Issuer())
	testWantErr(t, c, s1.Issuer(), "never-published", ErrUnknownKey) // one refetch, then remembered
	key1, key2 := testCurrent(t, c, s1.Issuer(), k1.Kid), testCurrent(t, c, s2.Issuer(), k2.Kid)
	is1, is2 := c.issuers.Load().byName[s1.Issuer()], c.issuers.Load().byName[s2.Issuer()]
	f1, f2 := s1.Fetches(), s2.Fetches()

	// Reordered, and s3 added: nothing is fetched (Run is not running).
	testSetIssuers(t, c, testDirect(s3), testDirect(s2), testDirect(s1))
	if s1.Fetches() != f1 || s2.Fetches() != f2 || s3.Fetches() != 0 {
		t.Errorf("fetches after SetIssuers: %d, %d, %d; want %d, %d, 0", s1.Fetches(), s2.Fetches(), s3.Fetches(), f1, f2)
	}
	if c.issuers.Load().byName[s1.Issuer()] != is1 || c.issuers.Load().byName[s2.Issuer()] != is2 {
		t.Error("an unchanged issuer was rebuilt")
	}
	if testCurrent(t, c, s1.Issuer(), k1.Kid) != key1 || testCurrent(t, c, s2.Issuer(), k2.Kid) != key2 {
		t.Error("an unchanged issuer's key was replaced")
	}
	if n := testRemembered(c, s1.Issuer()); n != 1 {
		t.Errorf("%d kids remembered as not found, want the 1 from before SetIssuers", n)
	}
	testWantErr(t, c, s1.Issuer(), "never-published", ErrUnknownKey)
	if s1.Fetches() != f1 {
		t.Error("a remembered kid was refetched after SetIssuers")
	}
	if got, want := testStatusIssuers(c), []string{s3.Issuer(), s2.Issuer(), s1.Issuer()}; !slices.Equal(got, want) {
		t.Errorf("Status issuers = %q, want the new configuration order %q", got, want)
	}
	if got := c.Unready(); !slices.Equal(got, []string{s3.Issuer()}) {
		t.Errorf("Unready = %q, want only the added issuer", got)
	}

	// s2's jwks_uri now points at s3's server: a new issuer, with no keys
	// until it is fetched from there.
	moved := IssuerConfig{Issuer: s2.Issuer(), JWKSURI: s3.JWKSURI()}
	testSetIssuers(t, c, testDirect(s3), moved, testDirect(s1))
	if c.issuers.Load().byName[s2.Issuer()] == is2 {
		t.Fatal("a changed issuer kept its old state")
	}
	testWantErr(t, c, s2.Issuer(), k2.Kid, ErrKeysUnavailable)
	if got := c.Unready(); !slices.Equal(got, []string{s3.Issuer(), s2.Issuer()}) {
		t.Errorf("Unready = %q", got)
	}
	testRefresh(t, c, s2.Issuer())
	if s2.Fetches() != f2 || s3.Fetches() != 1 {
		t.Errorf("fetches from s2's and s3's servers: %d, %d; want %d, 1", s2.Fetches(), s3.Fetches(), f2)
	}
	testLookupVerifies(t, c, s2.Issuer(), k3)
	testWantErr(t, c, s2.Issuer(), k2.Kid, ErrUnknownKey)
	// Only the optional flag changes: that is a new issuer too.
	optional := moved
	optional.Optional = true
	testSetIssuers(t, c, testDirect(s3), optional, testDirect(s1))
	if st := testStatus(t, c, s2.Issuer()); !st.Optional || st.Keys != 0 {
		t.Errorf("Status(%s) = %+v, want a new optional issuer with no keys", s2.Issuer(), st)
	}

	// Run starts the loops of issuers added before it.
	testRun(t, c)
	testEventually(t, "every issuer fetched by Run", func() bool { return testHasKid(c, s3.Issuer(), k3.Kid) && testHasKid(c, s2.Issuer(), k3.Kid) })
	testLookupVerifies(t, c, s3.Issuer(), k3)
}

// A configuration SetIssuers refuses changes nothing: no issuer added,
// removed, replaced or fetched, no loop started or stopped, no metric.
func TestSetIssuersInvalidChangesNothing(t *testing.T) {
	tests := []struct {
		name string
		bad  IssuerConfig
		want string // in the error
	}{
		{
			name: "duplicate issuer",
			bad:  IssuerConfig{Issuer: "https://new.test/", JWKSURI: "https://new.test/other"},
			want: `issuer "https://new.test/" configured twice`,
		},
		{
			name: "plain http to a remote host",
			bad:  IssuerConfig{Issuer: "https://bad.test/", JWKSURI: "http://idp.example.com/jwks"},
			want: "https is required",
		},
		{
			name: "relative jwks_uri",
			bad:  IssuerConfig{Issuer: "https://bad.test/", JWKSURI: "/jwks"},
			want: "not an absolute URL",
		},
		{
			name: "jwks_uri not http(s)",
			bad:  IssuerConfig{Issuer: "https://bad.test/", JWKSURI: "ftp://idp.example.com/jwks"},
			want: "not an http(s) URL",
		},
		{
			name: "discovery from a plain-http remote issuer",
			bad:  IssuerConfig{Issuer: "http://idp.example.com", Discovery: true},
			want: "discovery",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k1 := jwkstest.NewKey(t, "ES256", "k1")
			k2 := jwkstest.NewKey(t, "EdDSA", "k2")
			s1, s2 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, k2)
			added := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "new"))
			c, reg := testNewCache(t, []IssuerConfig{testDirect(s1), testDirect(s2)}, Options{RefreshInterval: 20 * time.Millisecond})
			testRun(t, c)
			testEventually(t, "both issuers ready", func() bool { return len(c.Unready()) == 0 })
			before, status := c.issuers.Load(), c.Status()

			// Were it applied, s2 would go, s1 be replaced and a new
			// issuer be fetched.
			newCfg := IssuerConfig{Issuer: "https://new.test/", JWKSURI: added.JWKSURI()}
			s1Changed := testDirect(s1)
			s1Changed.Optional = true
			err := c.SetIssuers([]IssuerConfig{s1Changed, newCfg, tt.bad})
			if err == nil {
				t.Fatal("SetIssuers accepted the configuration")
			}
			if !strings.HasPrefix(err.Error(), "jwks: ") || !strings.Contains(err.Error(), tt.bad.Issuer) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want the package prefix, the issuer %q and %q", err, tt.bad.Issuer, tt.want)
			}

			if c.issuers.Load() != before {
				t.Error("the issuer set was replaced")
			}
			if got := c.Status(); len(got) != len(status) || got[0].Issuer != s1.Issuer() || got[0].Optional || got[1].Issuer != s2.Issuer() {
				t.Errorf("Status = %+v, want %+v", got, status)
			}
			testWantErr(t, c, "https://new.test/", "new", ErrUnknownIssuer)
			for _, name := range []string{"sidegate_jwks_refresh_total", "sidegate_jwks_unknown_kid_total"} {
				for _, o := range []string{"success", "not_found"} {
					if _, ok := testMetricSample(t, reg, name, map[string]string{"issuer": "https://new.test/", "outcome": o}); ok {
						t.Errorf("%s has a series for the refused issuer", name)
					}
				}
			}
			if n := testLoops(c); n != 2 {
				t.Errorf("%d refresh loops registered, want 2", n)
			}
			// Both loops keep running, and nothing is fetched for the
			// refused issuer.
			f2 := s2.Fetches()
			testIntervalsPass(t, s1, 3)
			testEventually(t, "s2 still refreshed", func() bool { return s2.Fetches() > f2 })
			if n := added.Fetches(); n != 0 {
				t.Errorf("the refused configuration's new issuer was fetched %d times", n)
			}
			testLookupVerifies(t, c, s1.Issuer(), k1)
			testLookupVerifies(t, c, s2.Issuer(), k2)
		})
	}
}

// A removed issuer's gauges go; its counters stay. An added one shows at
// zero at once.
func TestSetIssuersMetrics(t *testing.T) {
	s1 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "a"), jwkstest.NewKey(t, "EdDSA", "b"))
	s2 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "c"))
	s3 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "d"))
	iss1, iss2, iss3 := "https://one.test/", "https://two.test/", "https://three.test/"
	c, reg := testNewCache(t, []IssuerConfig{
		{Issuer: iss1, JWKSURI: s1.JWKSURI()},
		{Issuer: iss2, JWKSURI: s2.JWKSURI()},
	}, Options{})
	testRefresh(t, c, iss1)
	testRefresh(t, c, iss2)

	testSetIssuers(t, c, IssuerConfig{Issuer: iss2, JWKSURI: s2.JWKSURI()}, IssuerConfig{Issuer: iss3, JWKSURI: s3.JWKSURI()})
	names := []string{"sidegate_jwks_refresh_total", "sidegate_jwks_keys", "sidegate_jwks_last_success_timestamp_seconds"}
	want := `
# HELP sidegate_jwks_keys Usable keys in the issuer's current key set (0 when it has none).
# TYPE sidegate_jwks_keys gauge
sidegate_jwks_keys{issuer="https://three.test/"} 0
sidegate_jwks_keys{issuer="https://two.test/"} 1
# HELP sidegate_jwks_last_success_timestamp_seconds Unix time of the issuer's last successful JWKS fetch (absent before the first).
# TYPE sidegate_jwks_last_success_timestamp_seconds gauge
sidegate_jwks_last_success_timestamp_seconds{issuer="https://two.test/"} 1.8000000005e+09
# HELP sidegate_jwks_refresh_total JWKS fetches per issuer, by outcome (success, error).
# TYPE sidegate_jwks_refresh_total counter
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="success"} 1
sidegate_jwks_refresh_total{issuer="https://three.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://three.test/",outcome="success"} 0
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="success"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	for _, o := range testKidOutcomes {
		testKidMetric(t, reg, iss3, o, 0)
	}

	// Configured again, the issuer's counters carry on from where they were.
	testSetIssuers(t, c, IssuerConfig{Issuer: iss1, JWKSURI: s1.JWKSURI()})
	testRefresh(t, c, iss1)
	testRefreshMetric(t, reg, iss1, "success", 2)
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": iss1}, 2)
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// An added issuer starts from its snapshot; a fetch that was under way
// when its issuer was removed serves nothing, counts nothing and writes no
// snapshot, so the issuer configured again starts from what was good
// before the removal.
func TestSetIssuersSnapshotAndFetchInFlight(t *testing.T) {
	dir := t.TempDir()
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	before := jwkstest.NewKey(t, "ES256", "before")
	late := jwkstest.NewKey(t, "EdDSA", "late")
	s1, s2 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, before)
	c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s1), testDirect(s2)}, Options{SnapshotDir: dir})
	testRefresh(t, c, s2.Issuer())
	retired := c.issuers.Load().byName[s2.Issuer()]

	// A refresh of s2 is under way, held at the server, when s2 is removed.
	s2.SetKeys(late)
	s2.Hold()
	refreshed := make(chan error, 1)
	go func() { refreshed <- c.Refresh(context.Background(), s2.Issuer()) }()
	testEventually(t, "the held refresh", func() bool { return s2.Fetches() == 2 })
	testSetIssuers(t, c, testDirect(s1))
	s2.Release()
	if err := <-refreshed; err != nil {
		t.Fatalf("the refresh under way: %v", err)
	}
	// It finished into the forgotten issuer, and only there.
	if set := retired.set.Load(); set == nil || set.Keys[late.Kid] == nil {
		t.Fatalf("the refresh under way did not finish: %+v", set)
	}
	testWantErr(t, c, s2.Issuer(), late.Kid, ErrUnknownIssuer)
	testRefreshMetric(t, reg, s2.Issuer(), "success", 1)
	if _, ok := testMetricSample(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s2.Issuer()}); ok {
		t.Error("the removed issuer has a keys gauge")
	}

	// Configured again: its snapshot is the set from before the removal,
	// served with no fetch.
	testSetIssuers(t, c, testDirect(s1), testDirect(s2))
	if !testHasKid(c, s2.Issuer(), before.Kid) || testHasKid(c, s2.Issuer(), late.Kid) {
		t.Errorf("after re-adding, has %q: %v, has %q: %v; want the snapshot from before the removal",
			before.Kid, testHasKid(c, s2.Issuer(), before.Kid), late.Kid, testHasKid(c, s2.Issuer(), late.Kid))
	}
	testLookupVerifies(t, c, s2.Issuer(), before)
	if n := s2.Fetches(); n != 2 {
		t.Errorf("s2 fetched %d times, want 2: an added issuer's snapshot needs no fetch", n)
	}
	if got := c.Unready(); !slices.Equal(got, []string{s1.Issuer()}) {
		t.Errorf("Unready = %q: the added issuer's snapshot should make it ready", got)
	}
}

// Lookups, Current, Unready, Status and metric scrapes run while SetIssuers
// adds, removes and replaces an issuer over and over under Run (run with
// -race). The untouched issuer always answers with the same key; the
// changing one answers with its key or as unknown or keyless, never
// otherwise; and afterwards exactly the configured loops run.
func TestSetIssuersConcurrentLookups(t *testing.T) {
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	k2 := jwkstest.NewKey(t, "EdDSA", "k2")
	s1, s2 := jwkstest.NewServer(t, k1), jwkstest.NewServer(t, k2)
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s1)}, Options{RefreshInterval: 10 * time.Millisecond})
	testRun(t, c)
	testEventually(t, "ready", func() bool { return len(c.Unready()) == 0 })
	key1 := testCurrent(t, c, s1.Issuer(), k1.Kid)
	s2Optional := testDirect(s2)
	s2Optional.Optional = true
	configs := [][]IssuerConfig{
		{testDirect(s1)},
		{testDirect(s1), testDirect(s2)},
		{s2Optional, testDirect(s1)},
	}

	ctx := context.Background()
	lookup := func() error {
		if k, err := c.Lookup(ctx, s1.Issuer(), k1.Kid); err != nil || k != key1 {
			return fmt.Errorf("Lookup(s1) = %p, %v; want %p", k, err, key1)
		}
		if k, ok := c.Current(s1.Issuer(), k1.Kid, testNow); !ok || k != key1 {
			return fmt.Errorf("Current(s1) = %p, %v; want %p", k, ok, key1)
		}
		k, err := c.Lookup(ctx, s2.Issuer(), k2.Kid)
		if err == nil && k.ID != k2.Kid || err != nil && !errors.Is(err, ErrUnknownIssuer) && !errors.Is(err, ErrKeysUnavailable) {
			return fmt.Errorf("Lookup(s2) = %v, %v", k, err)
		}
		if st := c.Status(); len(st) == 0 || len(st) > 2 {
			return fmt.Errorf("Status = %+v", st)
		}
		_ = c.Unready()
		return nil
	}
	// Two writers race each other (SetIssuers calls are serialised).
	reconfigure := func(w int) error {
		for i := range 60 {
			if err := c.SetIssuers(configs[(i+w)%len(configs)]); err != nil {
				return err
			}
			runtime.Gosched()
		}
		return nil
	}
	testReadWhileWriting(t, reg, 4, lookup, 2, reconfigure)

	testSetIssuers(t, c, testDirect(s1), testDirect(s2))
	testEventually(t, "s2 ready after the last SetIssuers", func() bool { return len(c.Unready()) == 0 })
	testLookupVerifies(t, c, s2.Issuer(), k2)
	if n := testLoops(c); n != 2 {
		t.Errorf("%d refresh loops registered after the churn, want 2", n)
	}
}

// Run keeps its contract with SetIssuers around: a second Run while one
// runs is refused, and Run can run again after it returned, starting the
// loops of the issuers configured then.
func TestRunOnceAtATime(t *testing.T) {
	s1 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "k1"))
	s2 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "k2"))
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s1)}, Options{RefreshInterval: time.Hour})
	t.Run("second Run while one runs", func(t *testing.T) {
		testRun(t, c) // until this subtest ends
		testEventually(t, "Run started", func() bool { return s1.Fetches() == 1 })
		if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("a second Run = %v, want an error", err)
		}
	})
	if n := testLoops(c); n != 0 {
		t.Errorf("%d loops registered after Run returned", n)
	}

	testSetIssuers(t, c, testDirect(s1), testDirect(s2))
	if n := s2.Fetches(); n != 0 {
		t.Fatalf("SetIssuers with no Run running fetched %d times", n)
	}
	testRun(t, c)
	testEventually(t, "both issuers fetched by the second Run", func() bool { return s1.Fetches() == 2 && s2.Fetches() == 1 })
}

// The request path allocates nothing, reconfigurable issuers or not.
func TestLookupAllocations(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	testRefresh(t, c, s.Issuer())
	testSetIssuers(t, c, testDirect(s), IssuerConfig{Issuer: "https://other.test/", JWKSURI: "https://other.test/jwks"})
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Lookup(ctx, s.Issuer(), k.Kid); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := c.Current(s.Issuer(), k.Kid, testNow); !ok {
			t.Fatal("Current: not served")
		}
	}); n != 0 {
		t.Errorf("Current allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Lookup(ctx, "https://unknown.test/", k.Kid); !errors.Is(err, ErrUnknownIssuer) {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Lookup of an unknown issuer allocates %v times", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	k := jwkstest.NewKey(b, "ES256", "k")
	s := jwkstest.NewServer(b, k)
	c, err := New([]IssuerConfig{testDirect(s)}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Refresh(ctx, s.Issuer()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Lookup(ctx, s.Issuer(), k.Kid); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
