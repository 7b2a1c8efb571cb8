package agent

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

func TestEndpointWatchesFollowTheServiceOnThisNode(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := func(name, service, node string, ready bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "dns", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
		}
	}
	k, err := newKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	w := newEndpointWatches(ctx, k, "node-1")
	expect := func(what string, want bool) {
		t.Helper()
		var last error
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			got, err := w.Ready("dns", "coredns")
			last = err
			return err == nil && got == want, nil
		})
		if err != nil {
			t.Fatalf("%s: want ready=%v (last error %v)", what, want, last)
		}
	}
	create := func(s *discoveryv1.EndpointSlice) {
		if _, err := cs.DiscoveryV1().EndpointSlices("dns").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expect("no slices", false)
	create(slice("coredns-a", "coredns", "node-2", true))
	create(slice("other", "other", "node-1", true))
	expect("ready endpoints only on another node and of another Service", false)
	create(slice("coredns-b", "coredns", "node-1", false))
	expect("an endpoint on this node that is not ready", false)
	s, err := cs.DiscoveryV1().EndpointSlices("dns").Get(ctx, "coredns-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Endpoints[0].Conditions.Ready = ptr.To(true)
	if _, err := cs.DiscoveryV1().EndpointSlices("dns").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("a ready endpoint on this node", true)
	if err := cs.DiscoveryV1().EndpointSlices("dns").Delete(ctx, "coredns-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("the endpoint is gone", false)
}
