package install

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	validator "github.com/operator-framework/api/pkg/validation/interfaces"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
	"github.com/anycast-operator/anycast-operator/test/install/bundlegen"
)

// TestBundleUpToDate: bundle/ and bundle.Dockerfile are what make bundle writes from config/ now.
func TestBundleUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := bundlegen.Generate(filepath.Join("..", ".."), dir, dir, bundlegen.Options{Version: "0.1.0"}); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		committed := filepath.Join("..", "..", "bundle", rel)
		if rel == "bundle.Dockerfile" {
			committed = filepath.Join("..", "..", rel)
		}
		want, _ := os.ReadFile(path)
		got, err := os.ReadFile(committed)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what make bundle writes from config/ now; run make bundle and commit", committed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBundleValid validates the bundle with operator-framework/api's validators (bundle, CSV, CRDs, OperatorHub,
// good practices, standard capabilities and categories) and fails on any error; warnings are listed.
func TestBundleValid(t *testing.T) {
	bundle, err := manifests.GetBundleFromDir(filepath.Join("..", "..", "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	validators := validator.Validators{validation.BundleValidator, validation.ClusterServiceVersionValidator,
		validation.CustomResourceDefinitionValidator, validation.OperatorHubV2Validator, validation.GoodPracticesValidator,
		validation.StandardCapabilitiesValidator, validation.StandardCategoriesValidator}
	results := validators.Validate(bundle, map[string]string{"k8s-version": "1.37"})
	checked := 0
	for _, r := range results {
		checked++
		for _, e := range r.Errors {
			t.Errorf("%s: %s", r.Name, e)
		}
		for _, w := range r.Warnings {
			if w.Level == errors.LevelWarn {
				t.Logf("warning %s: %s", r.Name, w)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no validator ran")
	}
	if bundle.CSV == nil || len(bundle.V1CRDs) != 4 {
		t.Fatalf("the bundle has no CSV or not the four CRDs")
	}
	kinds := map[string]bool{}
	for _, crd := range bundle.CSV.Spec.CustomResourceDefinitions.Owned {
		kinds[crd.Kind] = len(crd.SpecDescriptors) > 0 && len(crd.StatusDescriptors) > 0
	}
	for _, k := range []string{"AnycastPrefix", "HealthPolicy", "BGPSessionClaim", "NodeAnnouncement"} {
		if !kinds[k] {
			t.Errorf("%s is not owned with spec and status descriptors", k)
		}
	}
}

// TestBundleAccepted applies the bundle's manifests to a test API server with OLM's own CRDs (from its module):
// the ClusterServiceVersion must pass OLM's schema.
func TestBundleAccepted(t *testing.T) {
	dir, err := testenv.ModuleDir("github.com/operator-framework/api")
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start(testenv.WithCRDs(filepath.Join(dir, "crds")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "bundle", "manifests", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs := decode(t, b)
		for _, o := range objs {
			if o.GetNamespace() == "" && o.GetKind() != "CustomResourceDefinition" {
				o.SetNamespace("operators") // OLM installs into the OperatorGroup's namespace
			}
		}
		ensureNamespaces(t, c, objs)
		serverSideApply(t, c, objs, false)
	}
}
