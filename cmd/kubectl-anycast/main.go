// Command kubectl-anycast is the kubectl plugin of anycast-operator (`kubectl anycast ...` once it is on PATH):
// which nodes announce which prefix and why, and what a change would announce or withdraw before it is applied.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes: a pipeline tells a refused change from a failure.
const (
	exitError   = 1
	exitRefused = 2
)

const usage = `kubectl anycast shows what anycast-operator announces where, and why.

Commands:
  status [ANYCASTPREFIX]        per prefix and node: state, since, reason, sessions, permit; the budget in use
  explain ANYCASTPREFIX NODE    why the node does or does not announce the prefix, in sentences
  plan -f FILE... [--delete KIND/NAME]... [--max-withdraw N]
                                what applying the files would announce or withdraw, computed by the manager's
                                planner on the live cluster; exits 2 when a prefix would leave more than N nodes
  drain NODE                    deprefer every prefix on the node, then withdraw it after withdrawDelay
  undrain NODE                  announce again from the node
  version

Flags of every command: --kubeconfig, --context, --request-timeout (default 30s).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, time.Now))
}

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, now func() time.Time) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("kubectl anycast "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
	kubeContext := fs.String("context", "", "The kubeconfig context to use.")
	timeout := fs.Duration("request-timeout", 30*time.Second, "How long the whole command may wait on the API server.")
	var files, deletes multiFlag
	var maxWithdraw int
	var dryRun bool
	if cmd == "plan" {
		fs.Var(&files, "f", "A file of objects to apply (YAML or JSON, several per file; - is standard input). Repeatable.")
		fs.Var(&deletes, "delete", "An object the change deletes, KIND/NAME (anycastprefix/web). Repeatable.")
		fs.IntVar(&maxWithdraw, "max-withdraw", -1, "Exit 2 when the change would take a prefix off more than this many nodes (-1: no limit).")
		fs.BoolVar(&dryRun, "server-dry-run", true, "Have the API server validate and default each object with a dry run before planning it (needs the rights to apply them).")
	}
	positional, err := parseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "error:", err)
		return exitError
	}
	if cmd == "version" {
		fmt.Fprintln(stdout, "kubectl-anycast", version)
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := connect(*kubeconfig, *kubeContext, *timeout)
	if err != nil {
		return fail(err)
	}

	switch cmd {
	case "status":
		if len(positional) > 1 {
			return fail(errors.New("usage: kubectl anycast status [ANYCASTPREFIX]"))
		}
		in, err := cli.Read(ctx, c)
		if err != nil {
			return fail(err)
		}
		name := ""
		if len(positional) == 1 {
			name = positional[0]
		}
		if err := cli.Status(stdout, in, name, now()); err != nil {
			return fail(err)
		}
	case "explain":
		if len(positional) != 2 {
			return fail(errors.New("usage: kubectl anycast explain ANYCASTPREFIX NODE"))
		}
		in, err := cli.Read(ctx, c)
		if err != nil {
			return fail(err)
		}
		if err := cli.Explain(stdout, in, positional[0], positional[1], now()); err != nil {
			return fail(err)
		}
	case "plan":
		if len(positional) > 0 || len(files)+len(deletes) == 0 {
			return fail(errors.New("usage: kubectl anycast plan -f FILE... [--delete KIND/NAME]... [--max-withdraw N]"))
		}
		return preview(ctx, c, files, deletes, maxWithdraw, dryRun, stdin, stdout, stderr)
	case "drain", "undrain":
		if len(positional) != 1 {
			return fail(fmt.Errorf("usage: kubectl anycast %s NODE", cmd))
		}
		if err := cli.Drain(ctx, c, positional[0], cmd == "drain"); err != nil {
			return fail(err)
		}
		if cmd == "drain" {
			fmt.Fprintf(stdout, "node/%s drained: its agent deprefers every prefix now and withdraws after withdrawDelay\n", positional[0])
		} else {
			fmt.Fprintf(stdout, "node/%s undrained: its agent announces again after reannounceDelay\n", positional[0])
		}
	default:
		fmt.Fprintf(stderr, "error: unknown command %q\n\n%s", cmd, usage)
		return exitError
	}
	return 0
}

func preview(ctx context.Context, c client.Client, files, deletes []string, maxWithdraw int, dryRun bool, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "error:", err)
		return exitError
	}
	objs, err := cli.Load(files, stdin)
	if err != nil {
		return fail(err)
	}
	var refs []cli.Ref
	for _, d := range deletes {
		r, err := cli.ParseRef(d)
		if err != nil {
			return fail(err)
		}
		refs = append(refs, r)
	}
	before, err := cli.Read(ctx, c)
	if err != nil {
		return fail(err)
	}
	validator := c
	if !dryRun {
		validator = nil
	}
	after, err := cli.Change(ctx, validator, before, objs, refs)
	if err != nil {
		return fail(err)
	}
	pv := cli.Diff(before, after)
	pv.Print(stdout)
	if worst, n := pv.MostTakenOff(); maxWithdraw >= 0 && n > maxWithdraw {
		fmt.Fprintf(stderr, "refused: the change takes %s (AnycastPrefix %s) off %d node(s), more than --max-withdraw %d\n", worst.CIDR, worst.AnycastPrefix, n, maxWithdraw)
		return exitRefused
	}
	return 0
}

// connect builds a client from the kubeconfig as kubectl does; every request has the deadline.
func connect(kubeconfig, kubeContext string, timeout time.Duration) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = timeout
	cfg.UserAgent = "kubectl-anycast/" + version
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, anycastv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// parseInterspersed parses flags wherever they are among the arguments (kubectl's convention), returning the rest.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
