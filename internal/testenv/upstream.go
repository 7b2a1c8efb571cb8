package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// Upstream modules whose CRDs the backend tests install, read from the Go module cache, never copied into the repo.
const (
	MetalLBModule = "go.universe.tf/metallb"
	CalicoModule  = "github.com/projectcalico/api"
	// FRRK8sModule is frr-k8s, whose BGPSessionState the MetalLB backend reads in frr-k8s mode. v0.0.25 is the
	// newest the module proxy serves here (MetalLB v0.16.2 wants v0.0.27).
	FRRK8sModule  = "github.com/metallb/frr-k8s"
	FRRK8sVersion = "v0.0.25"
	CiliumModule  = "github.com/cilium/cilium"
	// CiliumVersion is the Cilium whose CRDs the tests install (and whose Go types test/upstream compares the local
	// ones with). The main module does not depend on Cilium, so the version is named here.
	CiliumVersion = "v1.20.2"
	// CalicoConfdVersion is the Calico whose confd hack/build-calico-confd.sh builds: the only Calico the module
	// proxy serves, a release-v3.28 commit published as a pseudo-version of the calico module; CalicoConfdCommit
	// names its directory in bin/calico/.
	CalicoConfdModule  = "github.com/projectcalico/calico"
	CalicoConfdVersion = "v1.11.0-cni-plugin.0.20250813170300-a0db560f0520"
	CalicoConfdCommit  = "a0db560f0520"
)

// CalicoV1CRDs is the directory of the crd.projectcalico.org/v1 CRDs of that Calico: what its confd reads (KDD mode),
// while Calico's API server serves the projectcalico.org/v3 kinds the backend writes.
func CalicoV1CRDs() (string, error) {
	dir, err := ModuleDir(CalicoConfdModule + "@" + CalicoConfdVersion)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "libcalico-go", "config", "crd"), nil
}

// MetalLBCRDs is the directory of MetalLB's CRDs in its module.
func MetalLBCRDs() (string, error) {
	dir, err := ModuleDir(MetalLBModule)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "config", "crd", "bases"), nil
}

// FRRK8sCRDs is the directory of frr-k8s's CRDs in its module.
func FRRK8sCRDs() (string, error) {
	dir, err := ModuleDir(FRRK8sModule + "@" + FRRK8sVersion)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "config", "crd", "bases"), nil
}

// CiliumCRDs is the directory of Cilium's cilium.io/v2 CRDs in its module.
func CiliumCRDs() (string, error) {
	dir, err := ModuleDir(CiliumModule + "@" + CiliumVersion)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pkg", "k8s", "apis", "cilium.io", "client", "crds", "v2"), nil
}

// CalicoCRDs returns a directory of Calico's projectcalico.org/v3 CRDs. The Calico API module served here ships no CRD
// YAML, so they are generated from the module's own Go types with controller-gen, as Calico 3.32 builds its native
// v3 CRDs; the kinds its types mark +genclient:nonNamespaced (all of Calico's BGP kinds) are made cluster-scoped,
// which this older module has no kubebuilder marker for. The result is cached under bin/calico-crds/<version>.
func CalicoCRDs() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	mod, err := ModuleDir(CalicoModule)
	if err != nil {
		return "", err
	}
	out := filepath.Join(root, "bin", "calico-crds", filepath.Base(mod))
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return out, nil
	}
	gen, err := exec.Command("go", "tool", "-n", "controller-gen").Output()
	if err != nil {
		return "", fmt.Errorf("finding controller-gen (go tool -n controller-gen): %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil { // a fresh clone has no bin/
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(strings.TrimSpace(string(gen)), "crd:allowDangerousTypes=true", "paths=./pkg/apis/projectcalico/v3/...", "output:crd:dir="+tmp)
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("generating Calico's CRDs in %s: %w\n%s", mod, err, b)
	}
	clusterScoped, err := nonNamespacedKinds(filepath.Join(mod, "pkg", "apis", "projectcalico", "v3"))
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(tmp, "*.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &crd); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		if clusterScoped[crd.Spec.Names.Kind] {
			crd.Spec.Scope = apiextensionsv1.ClusterScoped
		}
		if b, err = yaml.Marshal(&crd); err != nil {
			return "", err
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		if _, statErr := os.Stat(out); statErr == nil {
			return out, nil // another test package generated them at the same time
		}
		return "", err
	}
	return out, nil
}

var typeDecl = regexp.MustCompile(`(?m)^type (\w+) struct`)

// nonNamespacedKinds lists the types of a package whose doc comment carries +genclient:nonNamespaced.
func nonNamespacedKinds(dir string) (map[string]bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range typeDecl.FindAllSubmatchIndex(b, -1) {
			// The comments between the previous declaration and this one (markers may stand apart from the doc
			// comment, separated by a blank line).
			block := b[:m[0]]
			if i := max(bytes.LastIndex(block, []byte("\n}")), bytes.LastIndex(block, []byte("\n)"))); i >= 0 {
				block = block[i:]
			}
			if bytes.Contains(block, []byte("+genclient:nonNamespaced")) {
				out[string(b[m[2]:m[3]])] = true
			}
		}
	}
	return out, nil
}
