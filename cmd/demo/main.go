// Command demo runs anycast-operator on one machine (see package demo): `make demo` for the live view,
// `make demo-check` for the scripted scenario with short timings, which exits non-zero unless every step was seen at
// the router.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/anycast-operator/anycast-operator/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	binDir := fs.String("bin-dir", filepath.Dir(self), "Where the manager and agent binaries are.")
	check := fs.Bool("check", false, "Run the scenario with short timings, print it line by line, exit 0 only if every step was seen at the router.")
	stay := fs.Bool("stay", true, "Keep running after the scenario until Ctrl-C (the default without --check).")
	live := fs.String("live", "auto", "Redraw the tables in place: auto (when the output is a terminal), true or false.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := demo.Config{BinDir: *binDir, Out: os.Stdout, Stay: *stay, Timings: demo.Interactive}
	if *check {
		cfg.Timings = demo.Check
		cfg.Stay = false
		stayFlagSet := false
		fs.Visit(func(f *flag.Flag) { stayFlagSet = stayFlagSet || f.Name == "stay" })
		if stayFlagSet {
			cfg.Stay = *stay
		}
	}
	switch *live {
	case "auto":
		cfg.Live = !*check && isTerminal(os.Stdout)
	case "true", "false":
		cfg.Live = *live == "true"
	default:
		return fmt.Errorf("--live=%q: want auto, true or false", *live)
	}
	return demo.Run(ctx, cfg)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
