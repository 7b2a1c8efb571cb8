package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// BenchmarkAgentFootprint runs the agent binary (embedded speaker, one BGP session to a router) against the test
// API server and measures its resident memory and CPU over a 10-second window once every check passes, with its
// /metrics scraped every 5 s as Prometheus would (more often than the usual 15-30 s).
func BenchmarkAgentFootprint(b *testing.B) {
	for _, tc := range []struct {
		name     string
		checks   int
		interval time.Duration
	}{{"checks=50/interval=1s", 50, time.Second}, {"checks=10/interval=100ms", 10, 100 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				rss, cpu := measureAgent(b, tc.checks, tc.interval, 10*time.Second)
				b.ReportMetric(rss, "rss-MB")
				b.ReportMetric(cpu, "cpu-%core")
			}
		})
	}
}

func measureAgent(b *testing.B, checks int, interval, window time.Duration) (rssMB, cpuPercent float64) {
	b.StopTimer()
	env, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/anycast-operator/anycast-operator/cmd/agent").CombinedOutput(); err != nil {
		b.Fatalf("building the agent: %v\n%s", err, out)
	}
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(b, netip.MustParseAddr("127.0.0.1"), 65001, map[netip.Addr]uint32{node: 64512})
	svc := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer svc.Close()

	// At most 16 checks per policy: spread them over policies, one prefix each.
	na := &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: "bench-1"}}
	na.Spec.Sessions = []anycastv1.NodeSessions{{Claim: "edge", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512,
		Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "127.0.0.1", ASN: 65001, Port: ptr.To(int32(router.Port))}}},
		Timers: &anycastv1.BGPTimers{ConnectRetry: &metav1.Duration{Duration: time.Second}}}}}
	for p := 0; p*16 < checks; p++ {
		spec := anycastv1.HealthPolicySpec{Interval: &metav1.Duration{Duration: interval}, Timeout: &metav1.Duration{Duration: interval * 8 / 10},
			RiseThreshold: ptr.To[int32](1)}
		for c := p * 16; c < min((p+1)*16, checks); c++ {
			spec.Checks = append(spec.Checks, anycastv1.HealthCheck{Name: fmt.Sprintf("c%02d", c), HTTP: &anycastv1.HTTPCheck{URL: fmt.Sprintf("%s/check/%d", svc.URL, c)}})
		}
		name := anycastv1.LocalObjectName(fmt.Sprintf("p%d", p))
		na.Spec.HealthPolicies = append(na.Spec.HealthPolicies, anycastv1.NodeHealthPolicy{Name: name, Spec: spec})
		na.Spec.Groups = append(na.Spec.Groups, anycastv1.PrefixGroup{Sessions: []anycastv1.LocalObjectName{"edge"}, HealthPolicy: name,
			Prefixes: []anycastv1.GroupPrefix{{Prefix: anycastv1.PlannedCIDR(fmt.Sprintf("198.51.%d.0/24", 100+p)), Source: "bench"}}})
	}
	ctx := context.Background()
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "anycast-system"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-1"}}, na} {
		if err := k8s.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	_ = l.Close()
	cmd := exec.Command(bin, "--node-name=bench-1", "--local-address=127.0.0.2", "--health-probe-bind-address=0", "--metrics-bind-address="+metricsAddr, "--state-dir="+b.TempDir())
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// Warm: every prefix announced at the router.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		for p := range na.Spec.Groups {
			if len(router.Paths(netip.MustParsePrefix(fmt.Sprintf("198.51.%d.0/24", 100+p)))) != 1 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatalf("the agent did not announce every prefix")
	}
	b.StartTimer()
	t0, ticks0 := time.Now(), cpuTicks(b, cmd.Process.Pid)
	// The measurement window itself: CPU is averaged over it.
	for end := t0.Add(window); time.Now().Before(end); time.Sleep(min(scrapeInterval, time.Until(end))) {
		scrape(b, "http://"+metricsAddr+"/metrics")
	}
	ticks1, elapsed := cpuTicks(b, cmd.Process.Pid), time.Since(t0)
	b.StopTimer()
	// /proc counts CPU time in USER_HZ, 100 per second on Linux.
	cpuPercent = float64(ticks1-ticks0) / 100 / elapsed.Seconds() * 100
	return rssOf(b, cmd.Process.Pid), cpuPercent
}

const scrapeInterval = 5 * time.Second

// scrape reads the agent's /metrics as Prometheus does, and checks that the agent's own series are there.
func scrape(b *testing.B, url string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "anycast_agent_check_duration_seconds_bucket") {
		b.Fatalf("scraping %s: %v %d", url, err, resp.StatusCode)
	}
}

// cpuTicks is the process's user+system CPU time in USER_HZ ticks (fields 14 and 15 of /proc/PID/stat).
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

// rssOf is the process's resident set size in MB (VmRSS of /proc/PID/status).
func rssOf(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
