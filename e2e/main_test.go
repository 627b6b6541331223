package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// version is what the test build stamps into the binary.
const version = "e2e-test"

// sidegateBin is the binary under test, built once by TestMain (with the
// race detector when the tests have it); binDir is where it is.
var sidegateBin, binDir string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sidegate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	binDir = dir
	sidegateBin = filepath.Join(dir, "sidegate")
	if err := build(sidegateBin, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building sidegate:", err)
		return 1
	}
	buildTime := time.Since(start)
	code := m.Run()
	printSummary(buildTime)
	return code
}

// build compiles cmd/sidegate the way a release does, with the version
// stamped in, and with the race detector when race is set.
func build(out string, race bool) error {
	goTool, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		return err
	}
	args := []string{"build", "-o", out, "-ldflags", "-X main.version=" + version}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/sidegate/sidegate/cmd/sidegate")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", goTool, strings.Join(args, " "), err, output.String())
	}
	return nil
}

// plainBinary is sidegate built without the race detector, for figures
// the race runtime would distort (TestSoak): the suite's own binary when
// the tests run without -race; under -race it is built on first use.
func plainBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildPlain()
	if err != nil {
		t.Fatalf("building sidegate without -race: %v", err)
	}
	return bin
}

var buildPlain = sync.OnceValues(func() (string, error) {
	if !raceEnabled {
		return sidegateBin, nil
	}
	out := filepath.Join(binDir, "sidegate-norace")
	return out, build(out, false)
})

// trackSources opens every non-test Go file, go.mod and go.sum of the
// module. The binary under test is built from them, but this test binary
// does not import them, so without this go test's result cache (which
// remembers the files a test opened while tests ran, not in TestMain)
// would replay a stale pass after a change to cmd/sidegate, authz or jwks.
// start calls it once.
var trackSources = sync.OnceFunc(func() {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return
	}
	root := filepath.Dir(gomod)
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch name := d.Name(); {
		case err != nil:
			return nil // a file removed while walking: best effort
		case d.IsDir():
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
		case name == "go.mod", name == "go.sum", strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"):
			if f, err := os.Open(path); err == nil {
				f.Close()
			}
		}
		return nil
	})
})

// figures are the measured numbers each scenario reports; TestMain prints
// them as a table at the end of the run (visible with go test -v).
var figures struct {
	sync.Mutex
	rows map[string][]string
}

// report records a figure for the scenario's row of the summary table.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	figures.Lock()
	defer figures.Unlock()
	if figures.rows == nil {
		figures.rows = map[string][]string{}
	}
	name := t.Name()
	if i := strings.IndexByte(name, '/'); i >= 0 {
		name = name[:i]
	}
	figures.rows[name] = append(figures.rows[name], msg)
}

func printSummary(buildTime time.Duration) {
	figures.Lock()
	defer figures.Unlock()
	if len(figures.rows) == 0 {
		return
	}
	names := make([]string, 0, len(figures.rows))
	for n := range figures.rows {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("\ne2e summary (sidegate built in %s, race=%v)\n", buildTime.Round(100*time.Millisecond), raceEnabled)
	fmt.Printf("| %-28s | %s |\n|---|---|\n", "scenario", "figures")
	for _, n := range names {
		fmt.Printf("| %-28s | %s |\n", n, strings.Join(figures.rows[n], "; "))
	}
}
