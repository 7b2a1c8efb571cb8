// Package testenv starts a real kube-apiserver and etcd (envtest) with this project's CRDs installed, for the
// integration tests. The binaries come from KUBEBUILDER_ASSETS or from bin/k8s/<version>, where
// hack/build-envtest-assets.sh builds them from the Go module proxy (`make envtest-assets`).
package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// KubernetesVersion is the version of the API server the tests run against.
const KubernetesVersion = "1.37.2"

// Env is a running test API server.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Scheme *runtime.Scheme
	Root   string

	kubeconfig string
}

// Stop stops the API server and removes the kubeconfig Kubectl wrote.
func (e *Env) Stop() error {
	if e.kubeconfig != "" {
		_ = os.Remove(e.kubeconfig)
	}
	return e.Environment.Stop()
}

// Option changes the test environment before it starts.
type Option func(*envtest.Environment)

// WithAPIServerStopTimeout bounds how long stopping the API server may take before it is killed; tests that stop it
// on purpose (to test behaviour without it) set it short.
func WithAPIServerStopTimeout(d time.Duration) Option {
	return func(e *envtest.Environment) { e.ControlPlaneStopTimeout = d }
}

// WithDualStackServices gives the API server an IPv6 Service range next to envtest's IPv4 one, so that IPv6 and
// dual-stack Services can be created.
func WithDualStackServices() Option {
	return func(e *envtest.Environment) {
		e.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/24,fd00:10:96::/112")
	}
}

// WithCRDs installs more CRDs, from directories of YAML files (the upstream CRDs of a BGP stack, read from the Go
// module cache).
func WithCRDs(dirs ...string) Option {
	return func(e *envtest.Environment) { e.CRDDirectoryPaths = append(e.CRDDirectoryPaths, dirs...) }
}

// ModuleDir returns the directory of a Go module of this repository's build list in the module cache, downloading
// it if needed.
func ModuleDir(module string) (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", module).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no directory in %q", module, out)
	}
	return info.Dir, nil
}

// Start starts the API server with the CRDs of config/crd/bases installed.
func Start(opts ...Option) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir(root)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := anycastv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		Scheme:                scheme,
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		// envtest leaves etcd and the API server running when a later step (installing the CRDs) fails.
		_ = env.Stop()
		return nil, fmt.Errorf("starting the test API server from %s: %w", assets, err)
	}
	// Tests create many objects quickly; the client-side rate limiter would only slow them down.
	cfg.QPS, cfg.Burst = 1000, 2000
	return &Env{Environment: env, Config: cfg, Scheme: scheme, Root: root}, nil
}

// AssetsDir returns the directory holding kube-apiserver, etcd and kubectl.
func AssetsDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(root, "bin", "k8s", KubernetesVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make envtest-assets` (builds it from the Go module proxy)", bin, dir)
		}
	}
	return dir, nil
}

// RepoRoot finds the repository's root (the directory holding PROJECT), from the working directory up: the test
// modules below it (test/upstream, test/install) have go.mod files of their own.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "PROJECT")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the repository root (PROJECT) was not found above the working directory")
		}
		dir = parent
	}
}

// Kubectl runs the kubectl built beside the API server against it, as an administrator, and returns its combined
// output.
func (e *Env) Kubectl(args ...string) (string, error) {
	if _, err := e.Kubeconfig(); err != nil {
		return "", err
	}
	assets, err := AssetsDir(e.Root)
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), append(args, "--kubeconfig", e.kubeconfig)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}

// Kubeconfig returns the path of a kubeconfig file for an administrator of the API server, writing it once.
func (e *Env) Kubeconfig() (string, error) {
	if e.kubeconfig == "" {
		f, err := os.CreateTemp("", "anycast-kubeconfig-")
		if err != nil {
			return "", err
		}
		_ = f.Close()
		if err := e.WriteKubeconfig(f.Name()); err != nil {
			_ = os.Remove(f.Name())
			return "", err
		}
		e.kubeconfig = f.Name()
	}
	return e.kubeconfig, nil
}

// WriteKubeconfig writes a kubeconfig for an administrator of the API server to path (mode 0600).
func (e *Env) WriteKubeconfig(path string) error {
	user, err := e.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	cfg, err := user.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, cfg, 0o600)
}

// Freeze stops the API server and etcd with SIGSTOP: they keep their sockets, so connections are accepted and
// requests sent, but nothing is answered, as in a partition or an overloaded control plane (a killed process fails
// fast instead and hides what a hung one does). The returned function resumes them (SIGCONT); it is also run when
// the test ends, and may be called more than once.
func (e *Env) Freeze(t testing.TB) (thaw func()) {
	t.Helper()
	pids, err := e.controlPlanePIDs()
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		})
	}
	t.Cleanup(thaw) // before anything can fail: the control plane never stays stopped
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %d: %v", pid, err)
		}
	}
	// kill(2) only queues the signal: a thread busy on another core can still answer a request that is in flight.
	// The freeze starts when the kernel reports every thread stopped.
	for _, pid := range pids {
		if err := waitStopped(pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return thaw
}

// waitStopped waits until every thread of pid is stopped ('T' in /proc/PID/task/TID/stat) or gone.
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		running, err := runningThreads(pid)
		if err != nil {
			return err
		}
		if running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d: %d threads still running %s after SIGSTOP", pid, running, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runningThreads(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	running := 0
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			running++
			continue
		}
		switch s[i+2] {
		case 'T', 'Z', 'X': // stopped, or a thread that has exited
		default:
			running++
		}
	}
	return running, nil
}

// controlPlanePIDs finds this environment's etcd (by its data directory) and kube-apiserver (by the etcd it uses).
func (e *Env) controlPlanePIDs() ([]int, error) {
	etcd := e.ControlPlane.Etcd
	if etcd == nil || etcd.URL == nil || etcd.DataDir == "" {
		return nil, errors.New("the control plane has no etcd data directory or URL")
	}
	var pids []int
	var haveEtcd, haveAPI bool
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		switch filepath.Base(args[0]) {
		case "etcd":
			if slices.Contains(args, "--data-dir="+etcd.DataDir) {
				pids, haveEtcd = append(pids, pid), true
			}
		case "kube-apiserver":
			if slices.ContainsFunc(args, func(a string) bool { return a == "--etcd-servers="+etcd.URL.String() }) {
				pids, haveAPI = append(pids, pid), true
			}
		}
	}
	if !haveEtcd || !haveAPI {
		return nil, fmt.Errorf("found etcd %v and kube-apiserver %v of this environment (pids %v)", haveEtcd, haveAPI, pids)
	}
	return pids, nil
}
