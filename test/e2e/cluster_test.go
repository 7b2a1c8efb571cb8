package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// startCluster starts a test API server with the operator's namespace and returns a client to it.
func startCluster(t testing.TB, opts ...testenv.Option) (*testenv.Env, client.Client) {
	t.Helper()
	env, err := testenv.Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	create(t, k8s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	return env, k8s
}

func create(t testing.TB, k8s client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

// edgeClaim is a claim named "edge" whose nodes peer with the test router, with short timers.
func edgeClaim(r *bgptest.Router) *anycastv1.BGPSessionClaim {
	c := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	c.Spec.LocalASN = 64512
	c.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(r.Address.String()), ASN: anycastv1.ASN(r.ASN), Port: ptr.To(int32(r.Port))}}}
	c.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	return c
}

// fastPolicy probes url every 100 ms (timeout 80 ms, rise 1, the given fall) with no dampening delays.
func fastPolicy(name, url string, fall int32) *anycastv1.HealthPolicy {
	hp := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: url}}}
	hp.Spec.Interval = &metav1.Duration{Duration: 100 * time.Millisecond}
	hp.Spec.Timeout = &metav1.Duration{Duration: 80 * time.Millisecond}
	hp.Spec.RiseThreshold, hp.Spec.FallThreshold = ptr.To[int32](1), ptr.To(fall)
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}, ReannounceDelay: &metav1.Duration{}, MinAnnounceDuration: &metav1.Duration{}}
	return hp
}

// dnsPrefix is the AnycastPrefix "dns" announcing 198.51.100.0/24 over the edge claim, checked by the policy.
func dnsPrefix(policy string) *anycastv1.AnycastPrefix {
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: anycastv1.LocalObjectName(policy)}
	return ap
}
