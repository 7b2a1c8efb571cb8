package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
)

// TestNoPerpetualDiff: a GitOps tool server-side applies the samples, the manager reconciles (and writes status),
// the tool applies the same manifests again: nothing changes, and the tool still owns every spec field it wrote.
// That holds because the manager never writes a user's spec and the CRDs default nothing into it.
func TestNoPerpetualDiff(t *testing.T) {
	c := backendtest.Start(t, func(*runtime.Scheme) error { return nil }, nil)
	ctx := context.Background()
	c.Nodes("n1", "n2")
	c.Create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: backendtest.OperatorNamespace},
		StringData: map[string]string{"password": "x"}})
	var objs []*unstructured.Unstructured
	for _, f := range []string{"anycast_v1alpha1_bgpsessionclaim.yaml", "anycast_v1alpha1_healthpolicy.yaml", "anycast_v1alpha1_anycastprefix.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", f))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decode(t, b)...)
	}
	apply := func() map[string]string {
		t.Helper()
		rv := map[string]string{}
		for _, o := range objs {
			u := o.DeepCopy()
			if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("argocd-controller")); err != nil {
				t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
			}
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
				t.Fatal(err)
			}
			rv[o.GetKind()+"/"+o.GetName()] = live.GetResourceVersion()
			if !backend.Contains(live.Object["spec"], o.Object["spec"]) {
				t.Errorf("%s %s: the live spec differs from the manifest", o.GetKind(), o.GetName())
			}
			if live, want := live.Object["spec"], o.Object["spec"]; !backend.Contains(want, live) {
				t.Errorf("%s %s: the live spec holds fields the manifest does not (defaults?): %v", o.GetKind(), o.GetName(), live)
			}
		}
		return rv
	}
	apply()
	c.Reconcile()
	c.Reconcile()
	before := apply() // after the manager's status writes
	c.Reconcile()
	after := apply()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed when the same manifest was applied again", k)
		}
	}
}
