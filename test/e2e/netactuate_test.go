package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/provider/netactuate/natest"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// logBuffer collects every log line of a component, to look for secrets in it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		fmt.Fprintln(&b.buf, prefix, args)
	}, funcr.Options{Verbosity: 10})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const naKey = "na-api-key-4c1d2e-never-copied"

// TestNetActuateProvisioning: a claim with the NetActuate provider → each node's agent finds its VM, creates its
// sessions once and reports them → the manager hands them to the backend (MetalLB objects) and shows them in the
// claim's status. A node the account does not know gets an actionable error. Restarted agents create nothing twice.
// The API key appears in no log line, event, status or error.
func TestNetActuateProvisioning(t *testing.T) {
	env, k8s := startMetalLBAPIServer(t)
	ctx := context.Background()
	nodes := map[string]netip.Addr{"edge-1": netip.MustParseAddr("127.0.0.2"), "edge-2": netip.MustParseAddr("127.0.0.4"), "edge-3": netip.MustParseAddr("127.0.0.6")}
	api := natest.Start(naKey, []natest.Server{
		{MBPkgID: 5001, FQDN: "edge-1.example", IPs: []netip.Addr{nodes["edge-1"]}},
		{MBPkgID: 5002, FQDN: "edge-2.example", IPs: []netip.Addr{nodes["edge-2"]}},
	}, []natest.Group{{ID: 100, ProviderASN: 36236, RoutersV4: []netip.Addr{netip.MustParseAddr("192.0.2.31"), netip.MustParseAddr("192.0.2.32")}}})
	t.Cleanup(api.Close)

	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "netactuate"}}
	claim.Spec.LocalASN = natest.CustomerASN
	claim.Spec.NetActuate = &anycastv1.NetActuateSessions{GroupID: 100, Redundant: true, APIURL: api.URL,
		APIKeySecretRef: &anycastv1.SecretKeyRef{Name: "na-api", Key: "apiKey"}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"netactuate"}
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "na-api", Namespace: namespace}, StringData: map[string]string{"apiKey": naKey}},
		claim, ap}
	for n := range nodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n}}})
	}
	create(t, k8s, objs...)

	var managerLog, agentLog logBuffer
	startManagerLogged(t, env, metallb.Translator{Namespace: "metallb-system", Mode: metallb.FRRK8s, FRRK8sNamespace: "metallb-system",
		Secrets: func(string, string) ([]byte, bool) { return nil, false }}, managerLog.logger())
	stops := map[string]func(){}
	for n, addr := range nodes {
		stops[n] = startProvisioningAgent(t, env, n, addr, agentLog.logger())
	}

	// Each known node is Ready with its two redundant sessions; the unknown one says what to do.
	poll(t, "the claim shows every node's provisioning", func() (bool, string) {
		var c anycastv1.BGPSessionClaim
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(claim), &c); err != nil {
			return false, err.Error()
		}
		states := map[string]anycastv1.NodeProvisioningStatus{}
		for _, p := range c.Status.Provisioning {
			states[p.Node] = p
		}
		ok := states["edge-1"].State == anycastv1.ProvisioningReady && states["edge-1"].Sessions == 2 &&
			states["edge-2"].State == anycastv1.ProvisioningReady && states["edge-2"].Sessions == 2 &&
			states["edge-3"].State == anycastv1.ProvisioningError && c.Status.TotalSessions == 4
		return ok, fmt.Sprintf("%+v, %d sessions", c.Status.Provisioning, c.Status.TotalSessions)
	})
	// The failing node is retried (every 100 ms here, with backoff): its state stays Error between retries
	// instead of passing through Discovering each time, so the claim's conditions hold still.
	var c anycastv1.BGPSessionClaim
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(claim), &c); err != nil {
			t.Fatal(err)
		}
		for _, p := range c.Status.Provisioning {
			if p.Node == "edge-3" && p.State != anycastv1.ProvisioningError {
				t.Fatalf("edge-3 went %s (%s) while being retried", p.State, p.Message)
			}
		}
	}
	ready := findCondition(c.Status.Conditions, anycastv1.ConditionReady)
	stalled := findCondition(c.Status.Conditions, anycastv1.ConditionStalled)
	if ready == nil || ready.Status != metav1.ConditionFalse || stalled == nil || stalled.Status != metav1.ConditionTrue ||
		stalled.Reason != anycastv1.ReasonProvisioningFailed || !strings.Contains(stalled.Message, "edge-3: No server of this NetActuate account has any of the node's addresses (127.0.0.6)") {
		t.Errorf("conditions with edge-3 unknown to the account: %+v", c.Status.Conditions)
	}
	for _, s := range c.Status.Sessions {
		if s.PeerASN != 36236 || (s.PeerAddress != "192.0.2.31" && s.PeerAddress != "192.0.2.32") {
			t.Errorf("claim session %+v", s)
		}
	}

	// The backend gets the provisioned peers like static ones: a BGPPeer per provider router, for the nodes that have it.
	poll(t, "MetalLB BGPPeers for the provisioned sessions", func() (bool, string) {
		var peers metallbv1beta2.BGPPeerList
		if err := k8s.List(ctx, &peers, client.InNamespace("metallb-system")); err != nil {
			return false, err.Error()
		}
		var got []string
		for _, p := range peers.Items {
			got = append(got, fmt.Sprintf("%s AS%d→AS%d %v", p.Spec.Address, p.Spec.MyASN, p.Spec.ASN, p.Spec.NodeSelectors[0].MatchExpressions[0].Values))
		}
		slices.Sort(got)
		want := []string{"192.0.2.31 AS64512→AS36236 [edge-1 edge-2]", "192.0.2.32 AS64512→AS36236 [edge-1 edge-2]"}
		return slices.Equal(got, want), fmt.Sprint(got)
	})

	// Restarted agents look again and create nothing twice.
	lists := func() int {
		n := 0
		for _, r := range api.Requests() {
			if strings.HasPrefix(r, "GET /api/bgp/bgpsessions") {
				n++
			}
		}
		return n
	}
	before := lists()
	for n, addr := range nodes {
		stops[n]()
		startProvisioningAgent(t, env, n, addr, agentLog.logger())
	}
	poll(t, "the restarted agents have listed their sessions again, several times", func() (bool, string) {
		return lists() >= before+6, fmt.Sprintf("%d lists since the restart", lists()-before)
	})
	if api.Creates() != 2 || api.SessionsOf(5001) != 2 || api.SessionsOf(5002) != 2 {
		t.Errorf("%d create calls, sessions %d and %d: want 2, 2 and 2", api.Creates(), api.SessionsOf(5001), api.SessionsOf(5002))
	}

	// The key is in no log line, event, status or error.
	var evs eventsv1.EventList
	if err := k8s.List(ctx, &evs); err != nil {
		t.Fatal(err)
	}
	var nas anycastv1.NodeAnnouncementList
	if err := k8s.List(ctx, &nas); err != nil {
		t.Fatal(err)
	}
	var claims anycastv1.BGPSessionClaimList
	if err := k8s.List(ctx, &claims); err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]any{"manager log": managerLog.String(), "agent log": agentLog.String(), "events": evs.Items,
		"NodeAnnouncements": nas.Items, "BGPSessionClaims": claims.Items} {
		b, _ := json.Marshal(v)
		if strings.Contains(string(b), naKey) {
			t.Errorf("the API key appears in the %s", what)
		}
	}
	if !strings.Contains(agentLog.String(), "Provisioning state changed") {
		t.Errorf("the agents' logs do not say what happened:\n%s", agentLog.String())
	}
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// startProvisioningAgent runs a deciding-only agent that provisions quickly; it returns a function that stops it.
func startProvisioningAgent(t *testing.T, env *testenv.Env, node string, addr netip.Addr, log logr.Logger) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	cfg := agent.Config{NodeName: node, Namespace: namespace, LocalAddress: addr, Version: "e2e", SessionPoll: 100 * time.Millisecond,
		ProvisionRetry: 100 * time.Millisecond, ProvisionRecheck: 200 * time.Millisecond}
	go func() {
		if err := agent.RunOnNode(ctx, env.Config, cfg, speaker.Delegated{}, clock.RealClock{}, log.WithValues("node", node)); err != nil {
			t.Errorf("agent %s: %v", node, err)
		}
		close(done)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}
