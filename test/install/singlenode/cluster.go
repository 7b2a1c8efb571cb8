// Package singlenode runs a real single-node Kubernetes cluster for tests: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a kubelet, all built from the Go module proxy (make cluster-binaries),
// over Debian's containerd and runc, with pods on a bridge CNI and images imported from docker-archives (no registry,
// no pull). What it changes on the host (kernel settings the kubelet rewrites, the bridge, the service address on lo,
// iptables chains, cgroups, mounts, network namespaces, containerd's socket directory) is put back when the test ends,
// and the test fails if anything is left.
//
// It follows ../shared/reference/real-kubelet.md: containerd runs with restrict_oom_score_adj (root here lacks
// CAP_SYS_RESOURCE), the kubelet with failCgroupV1 false, cgroupDriver cgroupfs (containerd 1.6 has no
// RuntimeConfig) and oomScoreAdj 0. There is no kube-proxy: the API server's Service address is put on lo and
// forwarded to the API server by the test, which is all in-cluster clients need. There is no cluster DNS.
//
// A failing test prints the daemons' logs; SINGLENODE_KEEP=1 keeps the cluster's directory (pod logs included) too.
package singlenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// ServiceIP is the kubernetes Service's address (the first of the service range), on lo while the cluster runs.
	ServiceIP   = "10.96.0.1"
	serviceCIDR = "10.96.0.0/24"
	podCIDR     = "10.88.0.0/24"
	bridgeName  = "anycni0"
	// containerd's default socket: cAdvisor's containerd factory in the kubelet is wired to it
	// (cadvisor container/containerd/factory.go), and the kubelet has no flag for it.
	containerdSocket = "/run/containerd/containerd.sock"
	// NodeName is the one node's name.
	NodeName = "singlenode"
)

// Options say where the binaries and images are and which address the node has.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet.
	BinDir string
	// NodeIP is the node's InternalIP: an address on a host interface the test owns (a netlab veth), which the
	// API server, the kubelet and hostNetwork pods use.
	NodeIP netip.Addr
	// PauseImage is the docker-archive of the sandbox image, tagged PauseTag; Images are imported alongside it.
	PauseImage, PauseTag string
	Images               []string
	// HostPaths are host paths the workloads create (hostPath volumes): removed at the end unless they were there.
	HostPaths []string
}

// Cluster is a running single-node cluster.
type Cluster struct {
	// Kubeconfig is an admin's (system:masters) kubeconfig; Config and Client are the same identity.
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	Dir        string

	opts  Options
	procs map[string]*process
	order []string
	host  *hostState
	// unforward removes the Service address and its forwarder.
	unforward func()
}

// ArchiveTag is the one tag a docker-archive (make images, make cluster-binaries) was written under.
func ArchiveTag(path string) (string, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return "", fmt.Errorf("%s: %w (make images and make cluster-binaries write it; make test runs both)", path, err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 {
		return "", fmt.Errorf("%s: want one image with one tag: %+v", path, m)
	}
	return m[0].RepoTags[0], nil
}

// Prerequisites returns what the machine lacks to run a cluster ("" when nothing).
func Prerequisites(binDir string) string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (a kubelet, containerd and network changes)")
	}
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables-save", "umount"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			missing = append(missing, "/usr/lib/cni/"+p+" (containernetworking-plugins)")
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = append(missing, filepath.Join(binDir, b)+" (make cluster-binaries)")
		}
	}
	if _, err := os.Stat(containerdSocket); err == nil {
		missing = append(missing, "no containerd already serving "+containerdSocket)
	}
	if len(missing) == 0 {
		return ""
	}
	return "a single-node cluster needs: " + strings.Join(missing, ", ")
}

// Start starts the cluster and waits until its node is Ready; everything is stopped and put back when t ends.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := removeStale(t); err != nil {
			t.Fatalf("cleaning up after a killed run: %v", err)
		}
	}
	if msg := Prerequisites(o.BinDir); msg != "" {
		t.Fatal(msg)
	}
	host, err := snapshot(o.HostPaths...)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "singlenode-")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMarker(dir, host); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir, opts: o, procs: map[string]*process{}, host: host}
	t.Cleanup(func() { c.stop(t) })
	if err := c.start(); err != nil {
		t.Fatal(err) // the cleanup prints the daemons' logs
	}
	return c
}

func (c *Cluster) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pkiDir := filepath.Join(c.Dir, "pki")
	for _, d := range []string{pkiDir, "etcd", "kubelet", "pods-logs", "containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam", "volume-plugins"} {
		if !filepath.IsAbs(d) {
			d = filepath.Join(c.Dir, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	p, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	nodeIP := c.opts.NodeIP.String()
	apiPort, err := freePort(nodeIP)
	if err != nil {
		return err
	}
	server := "https://" + net.JoinHostPort(nodeIP, strconv.Itoa(apiPort))
	steps := []func() error{
		func() error {
			return p.serving("apiserver", []net.IP{net.ParseIP(ServiceIP), net.ParseIP(nodeIP), net.ParseIP("127.0.0.1")},
				[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"})
		},
		func() error { return p.client("admin", "singlenode-admin", "system:masters") },
		func() error {
			return p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
		},
		func() error { return p.client("controller-manager", "system:kube-controller-manager") },
		func() error { return p.client("scheduler", "system:kube-scheduler") },
		func() error { return p.client("kubelet", "system:node:"+NodeName, "system:nodes") },
		func() error { return p.keyPair("sa") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("certificates: %w", err)
		}
	}
	kubeconfigs := map[string]string{}
	for _, n := range []string{"admin", "controller-manager", "scheduler", "kubelet"} {
		if kubeconfigs[n], err = p.kubeconfig(n, server); err != nil {
			return err
		}
	}
	c.Kubeconfig = kubeconfigs["admin"]

	etcdPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	peerPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if err := c.run("etcd", "--name=singlenode", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=singlenode="+peerURL,
		"--unsafe-no-fsync"); err != nil {
		return err
	}
	if err := c.run("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address="+nodeIP, "--secure-port="+strconv.Itoa(apiPort), "--advertise-address="+nodeIP,
		"--cert-dir="+filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"), "--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true"); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if err := c.waitReadyz(ctx); err != nil {
		return err
	}
	if err := c.serviceAddress(nodeIP, apiPort); err != nil {
		return err
	}
	if err := c.run("kube-controller-manager", "--kubeconfig="+kubeconfigs["controller-manager"],
		"--authentication-kubeconfig="+kubeconfigs["controller-manager"], "--authorization-kubeconfig="+kubeconfigs["controller-manager"],
		"--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=true",
		"--root-ca-file="+p.path("ca.crt"), "--service-account-private-key-file="+p.path("sa.key"),
		"--cluster-signing-cert-file="+p.path("ca.crt"), "--cluster-signing-key-file="+p.path("ca.key")); err != nil {
		return err
	}
	if err := c.run("kube-scheduler", "--kubeconfig="+kubeconfigs["scheduler"],
		"--authentication-kubeconfig="+kubeconfigs["scheduler"], "--authorization-kubeconfig="+kubeconfigs["scheduler"],
		"--secure-port=0", "--leader-elect=false"); err != nil {
		return err
	}
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	if err := c.startKubelet(kubeconfigs["kubelet"], p); err != nil {
		return err
	}
	return c.waitNodeReady(ctx)
}

// run starts one of the cluster's binaries; stop stops them in reverse order.
func (c *Cluster) run(name string, args ...string) error {
	bin := filepath.Join(c.opts.BinDir, name)
	if _, err := os.Stat(bin); err != nil {
		bin = name // containerd: from the system
	}
	p, err := startProcess(c.Dir, name, bin, args...)
	if err != nil {
		return err
	}
	c.procs[name] = p
	c.order = append(c.order, name)
	return nil
}

func (c *Cluster) waitReadyz(ctx context.Context) error {
	rc, err := rest.RESTClientFor(restConfigFor(c.Config))
	if err != nil {
		return err
	}
	var last error
	for ctx.Err() == nil {
		if p := c.procs["kube-apiserver"]; p.exited() {
			return fmt.Errorf("kube-apiserver exited: %v\n%s", p.err, p.tail(30))
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, last = rc.Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("the API server never became ready: %v", last)
}

func restConfigFor(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	return c
}

// serviceAddress puts the kubernetes Service's address on lo and forwards its port 443 to the API server: what
// kube-proxy would do for the one Service in-cluster clients need.
func (c *Cluster) serviceAddress(nodeIP string, apiPort int) error {
	if out, err := exec.Command("ip", "addr", "add", ServiceIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return fmt.Errorf("ip addr add %s dev lo: %v: %s", ServiceIP, err, out)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ServiceIP, "443"))
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(cs ...net.Conn) {
		mu.Lock()
		conns = append(conns, cs...)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", net.JoinHostPort(nodeIP, strconv.Itoa(apiPort)), 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			track(in, out)
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	c.unforward = func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		_ = exec.Command("ip", "addr", "del", ServiceIP+"/32", "dev", "lo").Run()
	}
	return nil
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # root here lacks CAP_SYS_RESOURCE: runc cannot set a sandbox's oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, filepath.Join(c.Dir, "containerd/root"), filepath.Join(c.Dir, "containerd/state"), containerdSocket,
		filepath.Join(c.Dir, "containerd/opt"), c.opts.PauseTag, filepath.Join(c.Dir, "cni/net.d"))
	conflist := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "singlenode", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}}]}
`, bridgeName, podCIDR, filepath.Join(c.Dir, "cni/ipam"))
	if err := os.WriteFile(filepath.Join(c.Dir, "containerd.toml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "cni/net.d/10-singlenode.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	if err := c.run("containerd", "--config", filepath.Join(c.Dir, "containerd.toml")); err != nil {
		return err
	}
	for ctx.Err() == nil {
		if p := c.procs["containerd"]; p.exited() {
			return fmt.Errorf("containerd exited: %v\n%s", p.err, p.tail(30))
		}
		if err := exec.CommandContext(ctx, "ctr", "--address", containerdSocket, "version").Run(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, img := range append([]string{c.opts.PauseImage}, c.opts.Images...) {
		out, err := exec.CommandContext(ctx, "ctr", "--address", containerdSocket, "-n", "k8s.io", "images", "import", img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %v: %s", img, err, out)
		}
	}
	return nil
}

func (c *Cluster) startKubelet(kubeconfig string, p *pki) error {
	port, err := freePort(c.opts.NodeIP.String())
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1, and containerd 1.6 answers no RuntimeConfig (so the kubelet cannot learn the driver).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%[1]s
imageServiceEndpoint: unix://%[1]s
# root lacks CAP_SYS_RESOURCE.
oomScoreAdj: 0
address: %[2]s
port: %[3]d
healthzPort: 0
readOnlyPort: 0
podLogsDir: %[4]s
volumePluginDir: %[5]s
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
maxPods: 30
# Nothing is ever pulled: every image is imported, and image GC must not remove them (containerd 1.6 does not pin
# the sandbox image).
imagePullCredentialsVerificationPolicy: NeverVerify
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[6]s}
authorization: {mode: Webhook}
rotateCertificates: false
serverTLSBootstrap: false
`, containerdSocket, c.opts.NodeIP, port, filepath.Join(c.Dir, "pods-logs"),
		filepath.Join(c.Dir, "volume-plugins"), p.path("ca.crt"))
	path := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	return c.run("kubelet", "--config="+path, "--kubeconfig="+kubeconfig, "--root-dir="+filepath.Join(c.Dir, "kubelet"),
		"--cert-dir="+filepath.Join(c.Dir, "kubelet/pki"), "--node-ip="+c.opts.NodeIP.String(), "--hostname-override="+NodeName, "--v=2")
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	for ctx.Err() == nil {
		for _, n := range []string{"kubelet", "containerd", "kube-controller-manager", "kube-scheduler"} {
			if p := c.procs[n]; p.exited() {
				return fmt.Errorf("%s exited: %v\n%s", n, p.err, p.tail(40))
			}
		}
		var node corev1.Node
		if err := c.Client.Get(ctx, client.ObjectKey{Name: NodeName}, &node); err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(time.Second)
	}
	return errors.New("the node never became Ready")
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ContainerLogs is the end of the latest log of a pod's container, read from the kubelet's pod log directory.
func (c *Cluster) ContainerLogs(namespace, pod string, uid, container string, lines int) string {
	files, _ := filepath.Glob(filepath.Join(c.Dir, "pods-logs", namespace+"_"+pod+"_"+uid, container, "*.log"))
	if len(files) == 0 {
		return ""
	}
	latest, latestTime := "", time.Time{}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(latestTime) {
			latest, latestTime = f, fi.ModTime()
		}
	}
	data, _ := os.ReadFile(latest)
	return strings.Join(lastLines(data, lines), "\n")
}

// lastLines are the last n lines of a log.
func lastLines(data []byte, n int) []string {
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return ls
}
