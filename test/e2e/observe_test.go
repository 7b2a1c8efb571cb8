package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// series is one scrape of a /metrics endpoint: every sample by its series (name and labels as exposed).
type series map[string]float64

func scrape(t *testing.T, url string) series {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := series{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// value is the sample of the series whose text holds every part (its name and label pairs), or -1.
func (s series) value(parts ...string) float64 {
	for k, v := range s {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(k, p) }) {
			return v
		}
	}
	return -1
}

// names are the metric names of a scrape.
func (s series) names() map[string]bool {
	out := map[string]bool{}
	for k := range s {
		name, _, _ := strings.Cut(k, "{")
		out[name] = true
	}
	return out
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func buildBinary(t *testing.T, root, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func startProcess(t *testing.T, bin, kubeconfig string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	startLogged(t, filepath.Base(bin), cmd, 40, false)
}

// TestMetricsOfTheRealProcesses runs the manager and an agent as the binaries users run, fails the node's service
// and brings it back, and scrapes both: the series show the withdrawal and the return. Then every series the
// dashboard and the alerts of config/observability name must be among those the two binaries export.
func TestMetricsOfTheRealProcesses(t *testing.T) {
	env, k8s := startCluster(t)
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(t)
	create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, edgeClaim(router), fastPolicy("web", svc.URL+"/healthz", 2), dnsPrefix("web"))
	managerMetrics, agentMetrics := freeAddr(t, "127.0.0.1"), freeAddr(t, node.String())
	startProcess(t, buildBinary(t, env.Root, "./cmd/manager"), kubeconfig, "--leader-elect=false", "--namespace="+namespace,
		"--metrics-bind-address="+managerMetrics, "--health-probe-bind-address=0")
	startProcess(t, buildBinary(t, env.Root, "./cmd/agent"), kubeconfig, "--node-name=edge-1", "--local-address="+node.String(),
		"--namespace="+namespace, "--health-probe-bind-address=0", "--metrics-bind-address="+agentMetrics, "--state-dir="+t.TempDir())
	agentURL, managerURL := "http://"+agentMetrics+"/metrics", "http://"+managerMetrics+"/metrics"
	dns := netip.MustParsePrefix("198.51.100.0/24")
	router.WaitFor(t, dns, "announced", func(p []bgptest.Path) bool { return announcedBy(p, node.String()) })
	waitSeries := func(what, url string, ok func(series) bool) series {
		t.Helper()
		var last series
		poll(t, what, func() (bool, string) {
			last = scrape(t, url)
			return ok(last), fmt.Sprintf("%d series", len(last))
		})
		return last
	}
	announced := func(s series) bool {
		return s.value("anycast_agent_prefix_state{", `prefix="198.51.100.0/24"`, `state="Announced"`) == 1
	}
	waitSeries("the agent reports the prefix announced", agentURL, announced)
	waitSeries("the agent's session is up", agentURL, func(s series) bool {
		return s.value("anycast_agent_bgp_session_up{", `claim="edge"`, `peer="127.0.0.1"`) == 1
	})
	waitSeries("the manager reports a node announcing", managerURL, func(s series) bool {
		return s.value("anycast_prefix_nodes{", `anycastprefix="dns"`, `state="announcing"`) == 1
	})

	svc.healthy.Store(false)
	router.WaitFor(t, dns, "withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
	withdrawn := waitSeries("the agent reports the withdrawal and its cause", agentURL, func(s series) bool {
		return s.value("anycast_agent_prefix_state{", `state="Withdrawn"`) == 1 &&
			s.value("anycast_agent_prefix_transitions_total{", `to="Withdrawn"`, `reason="Unhealthy"`) >= 1 &&
			s.value("anycast_agent_check_failures_total{", `policy="web"`, `check="web"`) >= 2 &&
			s.value("anycast_agent_check_up{", `policy="web"`) == 0
	})
	waitSeries("the manager reports the node withdrawn", managerURL, func(s series) bool {
		return s.value("anycast_prefix_nodes{", `anycastprefix="dns"`, `state="withdrawn"`) == 1 &&
			s.value("anycast_prefix_nodes{", `anycastprefix="dns"`, `state="announcing"`) == 0
	})

	svc.healthy.Store(true)
	router.WaitFor(t, dns, "announced again", func(p []bgptest.Path) bool { return announcedBy(p, node.String()) })
	agent := waitSeries("the agent reports the return", agentURL, func(s series) bool {
		return announced(s) && s.value("anycast_agent_prefix_transitions_total{", `to="Announced"`, `reason="Healthy"`) >= 2 &&
			s.value("anycast_agent_decision_to_speaker_seconds_count") >= 2 && s.value("anycast_agent_check_duration_seconds_count{") > 0
	})
	manager := waitSeries("the manager reports the return", managerURL, func(s series) bool {
		return s.value("anycast_prefix_nodes{", `anycastprefix="dns"`, `state="announcing"`) == 1 &&
			s.value("anycast_plan_duration_seconds_count") > 0 && s.value("anycast_api_writes_total{", `kind="NodeAnnouncement"`) >= 1
	})
	if withdrawn.value("anycast_agent_permit_held{", `anycastprefix="dns"`) != 1 {
		t.Errorf("the withdrawn node does not report holding its permit")
	}
	for k := range agent {
		if strings.Contains(k, "lastError") || regexp.MustCompile(`="[^"]*(refused|timeout|HTTP )[^"]*"`).MatchString(k) {
			t.Errorf("an unbounded label value (an error text): %s", k)
		}
	}

	// The dashboard and the alerts name only series the binaries export (and Prometheus's own up).
	exported := agent.names()
	for n := range manager.names() {
		exported[n] = true
	}
	exported["up"] = true
	name := regexp.MustCompile(`\b(anycast_[a-z_]*[a-z]|up)\b`) // not the anycast_prefix_* patterns of comments
	for _, f := range []string{"config/observability/dashboard.json", "config/observability/alerts.yaml"} {
		b, err := os.ReadFile(filepath.Join(env.Root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllString(string(b), -1) {
			if !exported[m] { // a histogram is exported as its _bucket, _sum and _count series
				t.Errorf("%s names %s, which neither binary exports", f, m)
			}
		}
	}
}
