package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// decode splits a multi-document manifest into objects.
func decode(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decoding the manifest: %v", err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// startAPIServer is a test API server (with the operator's CRDs) and an admin client.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	// The prometheus-operator's CRDs, from its module, for the chart's monitoring objects.
	mod, err := testenv.ModuleDir(prometheusOperator)
	if err != nil {
		t.Fatal(err)
	}
	crds := t.TempDir()
	for _, f := range []string{"podmonitors", "servicemonitors", "prometheusrules"} {
		b, err := os.ReadFile(filepath.Join(mod, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+f+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crds, f+".yaml"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env, err := testenv.Start(testenv.WithCRDs(crds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// prometheusOperator is the module whose CRDs the chart's monitoring objects must pass (a version the proxy serves).
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// ensureNamespaces creates the namespaces the objects live in, as a cluster would already have them.
func ensureNamespaces(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" {
			err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
}

// serverSideApply applies every object with server-side apply, as a dry run or for real; each must be accepted.
func serverSideApply(t *testing.T, c client.Client, objs []*unstructured.Unstructured, dryRun bool) {
	t.Helper()
	for _, o := range objs {
		opts := []client.ApplyOption{client.FieldOwner("install-test"), client.ForceOwnership}
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		if err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(o), opts...); err != nil {
			t.Errorf("the API server refused %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}
