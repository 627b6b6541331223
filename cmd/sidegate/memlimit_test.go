package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	log := slog.New(slog.DiscardHandler)
	t.Setenv("GOMEMLIMIT", "")

	for _, tc := range []struct {
		file string
		want int64
	}{
		{"268435456\n", 268435456 / 10 * 9},
		{"max\n", orig},
		{"garbage", orig},
		{"-5", orig},
	} {
		debug.SetMemoryLimit(orig)
		setMemoryLimit(write(tc.file), log)
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("memory.max %q: limit %d, want %d", tc.file, got, tc.want)
		}
	}
	debug.SetMemoryLimit(orig)
	setMemoryLimit(filepath.Join(dir, "missing"), log)
	if got := debug.SetMemoryLimit(-1); got != orig {
		t.Errorf("no cgroup file: limit %d, want %d", got, orig)
	}
	// GOMEMLIMIT set by the user wins.
	t.Setenv("GOMEMLIMIT", "100MiB")
	setMemoryLimit(write("268435456"), log)
	if got := debug.SetMemoryLimit(-1); got != orig {
		t.Errorf("with GOMEMLIMIT set: limit %d, want %d (untouched)", got, orig)
	}
}
