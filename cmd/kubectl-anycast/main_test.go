package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/cli"
	"github.com/anycast-operator/anycast-operator/internal/plan"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files from what the plugin prints")

// now is the plugin's clock in these tests: every "since" below is written relative to it.
var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// TestPlugin runs the plugin's commands against a real API server holding testdata/cluster.yaml, the
// NodeAnnouncements the manager's planner makes of it and the statuses their agents would write (written here: web
// fails on ams-1, which holds the budget's one permit and has withdrawn, and on fra-2, which is held back), and
// compares what it prints with testdata/*.golden (go test -run TestPlugin -update rewrites them).
func TestPlugin(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	objs, err := cli.Load([]string{"testdata/cluster.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}

	ago := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	session := anycastv1.NodeSessionStatus{Claim: "edge", PeerAddress: "192.0.2.1", PeerASN: 64500, State: anycastv1.SessionEstablished, Since: ago(2 * time.Hour)}
	passing := anycastv1.NodeCheckStatus{Policy: "web", Name: "http", State: anycastv1.CheckPassing, LastProbeTime: ago(2 * time.Second),
		Latency: &metav1.Duration{Duration: 2 * time.Millisecond}}
	failing := anycastv1.NodeCheckStatus{Policy: "web", Name: "http", State: anycastv1.CheckFailing, LastProbeTime: ago(time.Second),
		ConsecutiveFailures: 3, LastError: "HTTP 503, want 2xx", Latency: &metav1.Duration{Duration: 4 * time.Millisecond}}
	announced := func(p string, d time.Duration, reason string) anycastv1.NodePrefixStatus {
		return anycastv1.NodePrefixStatus{Prefix: anycastv1.PlannedCIDR(p), State: anycastv1.PrefixAnnounced, Since: ago(d), Reason: reason}
	}
	// The agents report in two rounds, as they would: ams-1 and fra-2 ask for a permit, the planner grants the one
	// the budget has to ams-1 (the first to ask, by name), which withdraws; fra-2 stays held back.
	settle(t, k8s)
	report(t, k8s, "fra-1", anycastv1.NodeAnnouncementStatus{Sessions: []anycastv1.NodeSessionStatus{session}, Checks: []anycastv1.NodeCheckStatus{passing},
		Prefixes: []anycastv1.NodePrefixStatus{announced("198.51.100.0/24", time.Hour, "Healthy"), announced("203.0.113.0/24", time.Hour, "Healthy")}})
	report(t, k8s, "fra-2", anycastv1.NodeAnnouncementStatus{Sessions: []anycastv1.NodeSessionStatus{session}, Checks: []anycastv1.NodeCheckStatus{failing},
		PermitRequests: []string{"web"},
		Prefixes:       []anycastv1.NodePrefixStatus{announced("198.51.100.0/24", 40*time.Second, "AwaitingPermit"), announced("203.0.113.0/24", time.Hour, "Healthy")}})
	report(t, k8s, "ams-1", anycastv1.NodeAnnouncementStatus{Sessions: []anycastv1.NodeSessionStatus{session}, Checks: []anycastv1.NodeCheckStatus{failing},
		PermitRequests: []string{"web"}, Prefixes: []anycastv1.NodePrefixStatus{announced("198.51.100.0/24", time.Hour, "Unhealthy")}})
	settle(t, k8s)
	report(t, k8s, "ams-1", anycastv1.NodeAnnouncementStatus{Sessions: []anycastv1.NodeSessionStatus{session}, Checks: []anycastv1.NodeCheckStatus{failing},
		Permits:  []string{"web"},
		Prefixes: []anycastv1.NodePrefixStatus{{Prefix: "198.51.100.0/24", State: anycastv1.PrefixWithdrawn, Since: ago(3 * time.Minute), Reason: "Unhealthy"}}})
	settle(t, k8s)

	plugin := func(args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		code := run(ctx, append(args, "--kubeconfig", kubeconfig), strings.NewReader(""), &stdout, &stderr, func() time.Time { return now })
		return stdout.String(), stderr.String(), code
	}
	for _, tc := range []struct {
		golden string
		args   []string
		code   int
	}{
		{"status", []string{"status"}, 0},
		{"status-web", []string{"status", "web"}, 0},
		{"explain-web-fra-1", []string{"explain", "web", "fra-1"}, 0},
		{"explain-web-fra-2", []string{"explain", "web", "fra-2"}, 0},
		{"explain-web-ams-1", []string{"explain", "web", "ams-1"}, 0},
		{"explain-web-lab-1", []string{"explain", "web", "lab-1"}, 0},
		{"explain-dns-fra-1", []string{"explain", "dns", "fra-1"}, 0},
		{"explain-dns-ams-1", []string{"explain", "dns", "ams-1"}, 0},
		{"plan-web-fra-only", []string{"plan", "-f", "testdata/web-fra-only.yaml", "--max-withdraw", "1"}, 0},
		{"plan-new-prefix", []string{"plan", "-f", "testdata/new-prefix.yaml"}, 0},
		{"plan-delete-dns", []string{"plan", "--delete", "anycastprefix/dns", "--max-withdraw", "1"}, exitRefused},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			stdout, stderr, code := plugin(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			golden(t, tc.golden, stdout+stderr)
		})
	}

	t.Run("plan does not change the cluster", func(t *testing.T) {
		var ap anycastv1.AnycastPrefix
		if err := k8s.Get(ctx, client.ObjectKey{Name: "web"}, &ap); err != nil {
			t.Fatal(err)
		}
		if ap.Spec.NodeSelector != nil {
			t.Fatalf("plan -f applied the file: nodeSelector %v", ap.Spec.NodeSelector)
		}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "cdn"}, &ap); !apierrors.IsNotFound(err) {
			t.Fatalf("plan -f created AnycastPrefix cdn: %v", err)
		}
	})
	t.Run("the API server's validation refuses a /0", func(t *testing.T) {
		_, stderr, code := plugin("plan", "-f", "testdata/default-route.yaml")
		if code != exitError || !strings.Contains(stderr, `the API server refuses AnycastPrefix "everything"`) || !strings.Contains(stderr, "0.0.0.0/0") {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
	})
	t.Run("drain and undrain", func(t *testing.T) {
		if _, stderr, code := plugin("drain", "fra-1"); code != 0 {
			t.Fatal(stderr)
		}
		settle(t, k8s)
		stdout, stderr, code := plugin("explain", "web", "fra-1")
		if code != 0 {
			t.Fatal(stderr)
		}
		golden(t, "explain-web-fra-1-drained", stdout)
		if _, stderr, code := plugin("undrain", "fra-1"); code != 0 {
			t.Fatal(stderr)
		}
		var n corev1.Node
		if err := k8s.Get(ctx, client.ObjectKey{Name: "fra-1"}, &n); err != nil {
			t.Fatal(err)
		}
		if _, ok := n.Annotations[anycastv1.DrainAnnotation]; ok {
			t.Fatalf("undrain left %v", n.Annotations)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, args := range [][]string{{"explain", "web"}, {"explain", "nope", "fra-1"}, {"explain", "web", "nope"}, {"status", "nope"}, {"plan"}, {"frobnicate"}} {
			if _, stderr, code := plugin(args...); code != exitError || stderr == "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
			}
		}
	})
	// Last: it stops the API server. Every request has a deadline, so the plugin fails instead of hanging.
	t.Run("a hung API server", func(t *testing.T) {
		env.Freeze(t)
		_, stderr, code := plugin("status", "--request-timeout", "2s")
		if code != exitError || stderr == "" {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}

// settle does what the manager does with the cluster: plan it, and write every node's NodeAnnouncement spec.
func settle(t *testing.T, k8s client.Client) {
	t.Helper()
	ctx := context.Background()
	in, err := cli.Read(ctx, k8s)
	if err != nil {
		t.Fatal(err)
	}
	for node, spec := range plan.Compute(in).Announcements {
		na := &anycastv1.NodeAnnouncement{}
		err := k8s.Get(ctx, client.ObjectKey{Name: node}, na)
		switch {
		case apierrors.IsNotFound(err):
			na = &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: spec}
			err = k8s.Create(ctx, na)
		case err == nil && !equality.Semantic.DeepEqual(na.Spec, spec):
			na.Spec = spec
			err = k8s.Update(ctx, na)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// report writes a node's status as its agent would, having acted on the current spec.
func report(t *testing.T, k8s client.Client, node string, st anycastv1.NodeAnnouncementStatus) {
	t.Helper()
	ctx := context.Background()
	na := &anycastv1.NodeAnnouncement{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: node}, na); err != nil {
		t.Fatal(err)
	}
	st.ObservedGeneration, st.AgentVersion = na.Generation, "test"
	na.Status = st
	if err := k8s.Status().Update(ctx, na); err != nil {
		t.Fatal(err)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestPlugin -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -run TestPlugin -update rewrites it after review):\n--- got\n%s--- want\n%s", path, got, want)
	}
}
