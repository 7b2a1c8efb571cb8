package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// TestKrewInstall packages the kubectl plugin as a release does (hack/plugin-release.sh, for this machine's platform),
// installs it with krew itself (built from the module proxy) from the manifest and archive, and runs it through
// kubectl's plugin mechanism against a test API server: the manifest passes krew's validation, the archive its
// sha256, and what lands on PATH is a working `kubectl anycast`.
func TestKrewInstall(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "hack", "build-krew.sh")).Output()
	if err != nil {
		t.Fatalf("hack/build-krew.sh: %v", err)
	}
	krew := strings.TrimSpace(string(out))

	dist := t.TempDir()
	release := exec.Command(filepath.Join(root, "hack", "plugin-release.sh"))
	release.Env = append(os.Environ(), "PLATFORMS="+runtime.GOOS+"/"+runtime.GOARCH, "PLUGIN_DIR="+dist)
	if out, err := release.CombinedOutput(); err != nil {
		t.Fatalf("hack/plugin-release.sh: %v\n%s", err, out)
	}
	manifest, err := os.ReadFile(filepath.Join(dist, "anycast.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifest), "uri: https://github.com/anycast-operator/anycast-operator/releases/download/v") {
		t.Errorf("the manifest does not point at the release:\n%s", manifest)
	}

	krewRoot := t.TempDir()
	install := exec.Command(krew, "install", "--manifest="+filepath.Join(dist, "anycast.yaml"),
		"--archive="+filepath.Join(dist, "kubectl-anycast_"+runtime.GOOS+"_"+runtime.GOARCH+".tar.gz"))
	install.Env = append(os.Environ(), "KREW_ROOT="+krewRoot)
	install.Stdin = strings.NewReader("")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("krew install: %v\n%s", err, out)
	}

	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	t.Setenv("PATH", filepath.Join(krewRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	version, err := env.Kubectl("anycast", "version")
	if err != nil || !strings.HasPrefix(version, "kubectl-anycast v") {
		t.Fatalf("kubectl anycast version: %v %q", err, version)
	}
	status, err := env.Kubectl("anycast", "status")
	if err != nil || !strings.HasPrefix(status, "ANYCASTPREFIX") {
		t.Fatalf("kubectl anycast status: %v %q", err, status)
	}
}
