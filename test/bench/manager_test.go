package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// buildManager builds the manager binary as users run it (make build), once per test binary.
func buildManager(tb testing.TB) string {
	tb.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(tb.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building the manager: %v\n%s", err, out)
	}
	return bin
}

// managerProcess is the manager binary running against the test API server.
type managerProcess struct {
	cmd     *exec.Cmd
	metrics string
}

func startManagerProcess(tb testing.TB, c *coldStart, bin string) *managerProcess {
	tb.Helper()
	kubeconfig, err := c.env.Kubeconfig()
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	args := []string{"--leader-elect=false", "--namespace=default", "--metrics-bind-address=" + addr, "--health-probe-bind-address=0", "--zap-log-level=" + envOr("ANYCAST_LOG_LEVEL", "error")}
	if w := os.Getenv("ANYCAST_WRITE_CONCURRENCY"); w != "" {
		args = append(args, "--write-concurrency="+w)
	}
	if os.Getenv("ANYCAST_PPROF") != "" {
		args = append(args, "--pprof-bind-address="+os.Getenv("ANYCAST_PPROF"))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if f := os.Getenv("ANYCAST_MANAGER_LOG"); f != "" { // the manager's log of a run, to look at by hand
		out, err := os.Create(f)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = out.Close() })
		cmd.Stderr = out
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &managerProcess{cmd: cmd, metrics: "http://" + addr + "/metrics"}
}

// memory returns the process's resident set now and at its peak, in MB (VmRSS, VmHWM).
func (m *managerProcess) memory(tb testing.TB) (rss, hwm float64) {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// writes is the number of write requests (everything but GET) the manager's API client has made, from its own
// metrics (client-go's rest_client_requests_total).
func (m *managerProcess) writes(tb testing.TB) int {
	tb.Helper()
	resp, err := http.Get(m.metrics)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") || strings.Contains(line, `method="GET"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err == nil {
			n += int(v)
		}
	}
	return n
}

// converged waits until every AnycastPrefix reports every node eligible: the planner writes that after it has
// written every NodeAnnouncement.
func (c *coldStart) converged(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var list anycastv1.AnycastPrefixList
		if err := c.k8s.List(ctx, &list); err != nil {
			return false, nil
		}
		for _, ap := range list.Items {
			if int(ap.Status.EligibleNodes) != c.nodes {
				return false, nil
			}
		}
		return len(list.Items) > 0, nil
	})
	if err != nil {
		tb.Fatalf("not converged within %s: %v", timeout, err)
	}
}

// BenchmarkManagerScale starts the manager binary, as users run it, against a test API server that holds the
// cluster (N Nodes, 100 AnycastPrefixes announced on every node) and no NodeAnnouncement; the clock runs from the
// process's start (its cache sync counted) to every AnycastPrefix reporting every node. Then it measures the
// process's memory, and the writes it makes in 10 s of steady state (none expected).
func BenchmarkManagerScale(b *testing.B) {
	bin := buildManager(b)
	for _, nodes := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			const prefixes = 100
			var total time.Duration
			var hwm, rss float64
			steady := 0
			for range b.N {
				b.StopTimer()
				c := newColdStart(b, nodes, prefixes)
				start := time.Now()
				m := startManagerProcess(b, c, bin)
				c.converged(b, 10*time.Minute)
				total += time.Since(start)
				c.verify(b, prefixes)
				if dir := os.Getenv("ANYCAST_PPROF_DIR"); dir != "" {
					// Profiling a run by hand: ANYCAST_PPROF=127.0.0.1:6060 ANYCAST_PPROF_DIR=/tmp make bench.
					out, _ := exec.Command("curl", "-s", "-o", filepath.Join(dir, fmt.Sprintf("heap-%d.pb.gz", nodes)), "http://"+os.Getenv("ANYCAST_PPROF")+"/debug/pprof/heap").CombinedOutput()
					b.Logf("heap profile: %s", out)
				}
				// Steady state: once the last writes of convergence are out (events and statuses trail the plan by
				// a moment), nothing changes, so nothing may be written for 10 s.
				settled := m.writes(b)
				for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
					time.Sleep(2 * time.Second)
					if n := m.writes(b); n == settled {
						break
					} else {
						settled = n
					}
				}
				time.Sleep(10 * time.Second)
				steady += m.writes(b) - settled
				r, h := m.memory(b)
				rss, hwm = max(rss, r), max(hwm, h)
				_ = m.cmd.Process.Kill()
				_ = m.cmd.Wait()
				_ = c.env.Stop()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "converge-s")
			b.ReportMetric(hwm, "peak-rss-MB")
			b.ReportMetric(rss, "rss-MB")
			b.ReportMetric(float64(steady)/float64(b.N), "steady-writes")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
