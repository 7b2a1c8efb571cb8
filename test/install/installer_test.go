package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestInstallerAccepted applies dist/install.yaml (make build-installer: config/default in one file) to a test API
// server, for real, as `kubectl apply --server-side -f dist/install.yaml` would.
func TestInstallerAccepted(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "dist", "install.yaml"))
	if err != nil {
		t.Fatalf("%v (run make build-installer first; make test does)", err)
	}
	objs := decode(t, b)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	for kind, want := range map[string]int{"CustomResourceDefinition": 4, "Namespace": 1, "Deployment": 1, "DaemonSet": 1, "Service": 1,
		"ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 2} {
		if kinds[kind] != want {
			t.Errorf("dist/install.yaml has %d %s, want %d", kinds[kind], kind, want)
		}
	}
	c := startAPIServer(t)
	serverSideApply(t, c, objs, false)
	for _, o := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(o), live); err != nil {
			t.Errorf("%s %s not there after the apply: %v", o.GetKind(), o.GetName(), err)
		}
	}
}
