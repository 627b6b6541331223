// Command sidegate is an Envoy external-authorization server that verifies
// the JWT on every request. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `sidegate verifies the JWT on every request for Envoy ext_authz and HTTP auth.

Usage:
  sidegate serve --config FILE     run the server (or SIDEGATE_CONFIG=FILE)
  sidegate dev                     zero-setup demo: in-process issuer, verifier, example curls
  sidegate revoke --nats URL (--jti ID [--exp T] | --sub SUB [--before T] | --kid KID) --iss ISS
  sidegate revoke --nats URL --token JWT
                                   publish a revocation event
  sidegate check-config --config FILE
                                   validate a configuration; exit 1 on any problem
  sidegate bench [flags]           load-test sidegate side by side with a do-nothing ext_authz server
  sidegate version                 print the version

Run "sidegate COMMAND -h" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(args, stdout, stderr)
	case "dev":
		return cmdDev(args, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args, stdout, stderr)
	case "revoke":
		return cmdRevoke(args, stdout, stderr)
	case "bench":
		return cmdBench(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "sidegate", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sidegate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// logFlags are the logging flags shared by the long-running commands.
type logFlags struct {
	level, format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error (debug logs every decision, never a token)")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", l.format)
}

// parseWithLogger adds the logging flags to fs, parses args and builds the
// logger. On a flag error it has printed the problem and returns nil.
func parseWithLogger(fs *flag.FlagSet, args []string, stderr io.Writer) *slog.Logger {
	fs.SetOutput(stderr)
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sidegate %s: %v\n", fs.Name(), err)
		return nil
	}
	return log
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("SIDEGATE_CONFIG"), "configuration file (default $SIDEGATE_CONFIG)")
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "sidegate check-config: --config FILE (or SIDEGATE_CONFIG) is required")
		return 2
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		printConfigError(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", *path, cfg.Summary())
	for _, w := range cfg.warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", *path, w)
	}
	return 0
}

// printConfigError prints each problem on its own line.
func printConfigError(w io.Writer, path string, err error) {
	var p problems
	if errors.As(err, &p) {
		fmt.Fprintf(w, "%s: %d problem(s):\n", path, len(p))
		for _, s := range p {
			fmt.Fprintf(w, "  %s\n", s)
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := configFlag(fs)
	log := parseWithLogger(fs, args, stderr)
	if log == nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "sidegate serve: --config FILE (or SIDEGATE_CONFIG) is required; try \"sidegate dev\" for a demo")
		return 2
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		printConfigError(stderr, *path, err)
		return 1
	}
	setMemoryLimit(cgroupMemoryMax, log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := newDaemon(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}
