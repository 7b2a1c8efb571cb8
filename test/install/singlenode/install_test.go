package singlenode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
	"github.com/anycast-operator/anycast-operator/test/install/singlenode"
)

const (
	namespace = "anycast-system"
	localASN  = 64512
	routerASN = 65001
	password  = "md5-only-in-a-secret"
)

var prefix = netip.MustParsePrefix("198.51.100.0/24")

// world is what the three install paths share: the cluster, a router on an address the test owns (a netlab
// namespace behind a veth), and the node's local service whose health the test sets.
type world struct {
	root    string
	bin     string // the cluster's binaries and kubectl
	cluster *singlenode.Cluster
	k8s     client.Client
	lab     *netlab.Lab
	router  *bgptest.Router
	service *localService
	images  map[string]string // component -> the tag make images wrote
}

// localService is the service the agents probe on the node (127.0.0.1, reached from their host-network pods).
type localService struct {
	*httptest.Server
	healthy atomic.Bool
}

// TestInstallPaths runs the operator as users install it, on a real single-node cluster (kubelet and containerd):
// the images make images builds, installed by kubectl apply of dist/install.yaml, by the Helm chart, and by the OLM
// bundle's deployment (the manager deploying its agents with --agent-image). Each time the agent's pod announces the
// prefix to the router from the node's address, withdraws it when the node's service fails, announces it again when
// it recovers, and is restarted with kubectl rollout restart while the router watches.
func TestInstallPaths(t *testing.T) {
	w := newWorld(t)
	for _, p := range []installPath{
		{name: "kubectl-apply", install: w.kubectlApply},
		{name: "helm", install: w.helmInstall},
		{name: "olm", install: w.olmInstall},
	} {
		if !t.Run(p.name, func(t *testing.T) { w.exercise(t, p) }) {
			return // the next path would meet what this one left
		}
	}
}

type installPath struct {
	name string
	// install installs the operator and returns how to uninstall it.
	install func(t *testing.T) (uninstall func(t *testing.T))
}

func newWorld(t *testing.T) *world {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.AssetsDir(root)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{root: root, bin: bin, images: map[string]string{}}
	var archives []string
	for _, c := range []string{"manager", "agent"} {
		path := filepath.Join(root, "bin/images", c+".tar")
		w.images[c] = imageTag(t, path)
		archives = append(archives, path)
	}
	pause := filepath.Join(root, "bin/images/pause.tar")
	w.lab = netlab.New(t, 1)
	w.cluster = singlenode.Start(t, singlenode.Options{BinDir: bin, NodeIP: w.lab.Nodes4[0],
		PauseImage: pause, PauseTag: imageTag(t, pause), Images: archives,
		HostPaths: []string{"/var/lib/anycast-agent"}}) // the agents' state directory (config/agent/daemonset.yaml)
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, anycastv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	if w.k8s, err = client.New(w.cluster.Config, client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	w.router = bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{w.lab.Router4}, ASN: routerASN,
		Neighbors: map[netip.Addr]uint32{w.lab.Nodes4[0]: localASN}, Password: password, Netns: w.lab.NetnsPath})
	w.service = &localService{}
	w.service.healthy.Store(true)
	w.service.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if !w.service.healthy.Load() {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(w.service.Close)
	return w
}

func imageTag(t *testing.T, path string) string {
	t.Helper()
	tag, err := singlenode.ArchiveTag(path)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// exercise installs, checks what the router sees through the agent's life, and uninstalls.
func (w *world) exercise(t *testing.T, p installPath) {
	ctx := context.Background()
	started := time.Now()
	uninstall := p.install(t)
	t.Cleanup(func() { uninstall(t) })
	w.waitRollout(t, "Deployment", "anycast-manager")
	w.waitRollout(t, "DaemonSet", "anycast-agent")
	t.Logf("%s: installed and rolled out in %v", p.name, time.Since(started).Round(time.Second))
	if p.name == "kubectl-apply" {
		w.checkPodSecurity(t)
	}

	w.create(t, w.objects()...)
	node := w.lab.Nodes4[0].String()
	got := w.router.WaitFor(t, prefix, "the agent's pod announces", func(ps []bgptest.Path) bool { return len(ps) == 1 && ps[0].NextHop == node })
	if ap := got[0].ASPath; len(ap) != 1 || ap[0] != localASN {
		t.Errorf("AS path %v, want [%d]", ap, localASN)
	}
	// The agent reported it (its status write passed the admission policy with its Pod-bound token), and the
	// manager counted it.
	poll(t, time.Minute, "the AnycastPrefix Ready, announced by 1 of 1 nodes", func() (bool, string) {
		var ap anycastv1.AnycastPrefix
		if err := w.k8s.Get(ctx, client.ObjectKey{Name: "web"}, &ap); err != nil {
			return false, err.Error()
		}
		ready := meta.FindStatusCondition(ap.Status.Conditions, anycastv1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionTrue && ap.Status.Announcing == "1/1", fmt.Sprintf("%+v", ap.Status)
	})
	downs := w.router.Downs(w.lab.Nodes4[0])

	w.service.healthy.Store(false)
	w.router.WaitFor(t, prefix, "withdrawn after the node's service failed", func(ps []bgptest.Path) bool { return len(ps) == 0 })
	w.service.healthy.Store(true)
	w.router.WaitFor(t, prefix, "announced again after recovery", func(ps []bgptest.Path) bool { return len(ps) == 1 && ps[0].NextHop == node })
	if d := w.router.Downs(w.lab.Nodes4[0]); d != downs {
		t.Errorf("the session dropped %d times while the service failed and recovered", d-downs)
	}

	// kubectl rollout restart: the agent's pod is replaced; what the router sees is recorded (README, "Shutdown").
	changes := w.router.Changes(t)
	before := w.runningPod(t, "anycast-agent").UID
	w.kubectl(t, nil, "-n", namespace, "rollout", "restart", "daemonset/anycast-agent")
	w.kubectl(t, nil, "-n", namespace, "rollout", "status", "daemonset/anycast-agent", "--timeout=3m")
	w.router.WaitFor(t, prefix, "announced by the restarted agent", func(ps []bgptest.Path) bool { return len(ps) == 1 && ps[0].NextHop == node })
	if w.runningPod(t, "anycast-agent").UID == before {
		t.Errorf("rollout restart did not replace the agent's pod")
	}
	withdrawals, announcements := countChanges(changes)
	restartDowns := w.router.Downs(w.lab.Nodes4[0]) - downs
	t.Logf("%s: kubectl rollout restart of the agents: the router lost the path %d time(s) and got it back %d time(s); the session went down %d time(s)",
		p.name, withdrawals, announcements, restartDowns)
	if withdrawals == 0 || restartDowns == 0 {
		t.Errorf("the README says a restart of the agent withdraws its paths (its session ends with it); the router saw %d withdrawal(s), %d session drop(s): update the README", withdrawals, restartDowns)
	}

	// The AnycastPrefix goes: the router loses the path. Then the claim and the policy, before the operator, as the
	// README's uninstall says (their finalizer is the manager's to remove).
	if err := w.k8s.DeleteAllOf(ctx, &anycastv1.AnycastPrefix{}); err != nil {
		t.Fatal(err)
	}
	w.router.WaitFor(t, prefix, "withdrawn when the AnycastPrefix is deleted", func(ps []bgptest.Path) bool { return len(ps) == 0 })
	for _, o := range []client.Object{&anycastv1.BGPSessionClaim{}, &anycastv1.HealthPolicy{}} {
		if err := w.k8s.DeleteAllOf(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, time.Minute, "the user's objects gone", func() (bool, string) {
		var ps anycastv1.AnycastPrefixList
		var cs anycastv1.BGPSessionClaimList
		var hs anycastv1.HealthPolicyList
		err := errors.Join(w.k8s.List(ctx, &ps), w.k8s.List(ctx, &cs), w.k8s.List(ctx, &hs))
		return err == nil && len(ps.Items)+len(cs.Items)+len(hs.Items) == 0, fmt.Sprintf("%d prefixes, %d claims, %d policies, %v", len(ps.Items), len(cs.Items), len(hs.Items), err)
	})
}

// checkPodSecurity checks what the namespace's Pod Security label says (config/manager/manager.yaml): the manager's
// running pod meets the restricted level, and the agent's needs privileged (restricted and baseline refuse it).
func (w *world) checkPodSecurity(t *testing.T) {
	ctx := context.Background()
	for level, want := range map[string]map[string]bool{"restricted": {"anycast-manager": true, "anycast-agent": false}, "baseline": {"anycast-agent": false}} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-" + level, Labels: map[string]string{"pod-security.kubernetes.io/enforce": level}}}
		w.create(t, ns)
		for app, admitted := range want {
			pod := w.runningPod(t, app)
			w.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pod.Spec.ServiceAccountName, Namespace: ns.Name}})
			dry := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns.Name}, Spec: pod.Spec}
			dry.Spec.NodeName = ""
			err := w.k8s.Create(ctx, dry, client.DryRunAll)
			if admitted && err != nil {
				t.Errorf("the %s pod does not meet Pod Security %q: %v", app, level, err)
			}
			if !admitted && (err == nil || !strings.Contains(err.Error(), "violates PodSecurity")) {
				t.Errorf("Pod Security %q admitted the %s pod (%v): the namespace could enforce it", level, app, err)
			}
		}
		if err := w.k8s.Delete(ctx, ns); err != nil {
			t.Error(err)
		}
	}
}

func (w *world) runningPod(t *testing.T, app string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := w.k8s.List(context.Background(), &pods, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for i, p := range pods.Items {
		if strings.HasPrefix(p.Name, app+"-") && p.DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	t.Fatalf("no %s pod", app)
	return nil
}

// countChanges counts the best-path changes of the prefix the router has streamed, until the last one seen is the
// prefix's return (the stream is asynchronous to the RIB the caller waited on) or 10 s have passed.
func countChanges(ch <-chan bgptest.Change) (withdrawals, announcements int) {
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-ch:
			if c.Prefix != prefix.String() {
				continue
			}
			if c.Withdrawn {
				withdrawals++
			} else if announcements++; withdrawals > 0 {
				return
			}
		case <-deadline:
			return
		}
	}
}

// objects are a user's: a claim with one MD5 session to the router, a health policy probing the local service, and
// the prefix.
func (w *world) objects() []client.Object {
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = localASN
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(w.router.Address.String()),
		ASN: routerASN, Port: ptr.To(int32(w.router.Port)), PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}}}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	hp := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: w.service.URL + "/healthz"}}}
	hp.Spec.Interval = &metav1.Duration{Duration: 200 * time.Millisecond}
	hp.Spec.Timeout = &metav1.Duration{Duration: 150 * time.Millisecond}
	hp.Spec.RiseThreshold, hp.Spec.FallThreshold = ptr.To[int32](1), ptr.To[int32](2)
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}, ReannounceDelay: &metav1.Duration{}, MinAnnounceDuration: &metav1.Duration{}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(prefix.String())}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}}
	return []client.Object{secret, claim, hp, ap}
}

func (w *world) create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := w.k8s.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// kubectlApply is the README's kubectl path: kubectl apply --server-side -f dist/install.yaml, with the images set
// to the ones built here (as kustomize edit set image would).
func (w *world) kubectlApply(t *testing.T) func(*testing.T) {
	data, err := os.ReadFile(filepath.Join(w.root, "dist/install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := w.setImages(t, data)
	w.kubectl(t, manifest, "apply", "--server-side", "-f", "-")
	return func(t *testing.T) {
		w.kubectl(t, manifest, "delete", "--ignore-not-found", "--wait", "--timeout=3m", "-f", "-")
		w.waitGone(t)
	}
}

func (w *world) setImages(t *testing.T, manifest []byte) []byte {
	t.Helper()
	out := manifest
	for _, c := range []string{"manager", "agent"} {
		old := []byte("ghcr.io/anycast-operator/" + c + ":latest")
		if !bytes.Contains(out, old) {
			t.Fatalf("the manifest has no image %s", old)
		}
		out = bytes.ReplaceAll(out, old, []byte(w.images[c]))
	}
	return out
}

// helmInstall is helm install of the chart, through Helm's library, with the images built here.
func (w *world) helmInstall(t *testing.T) func(*testing.T) {
	chrt, err := loader.Load(filepath.Join(w.root, "charts/anycast-operator"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.helmConfig(t)
	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace, install.CreateNamespace = "anycast", namespace, true
	install.Timeout = 3 * time.Minute
	vals := map[string]any{"image": map[string]any{}}
	for _, c := range []string{"manager", "agent"} {
		repo, tag, _ := strings.Cut(w.images[c], ":")
		vals["image"].(map[string]any)[c] = map[string]any{"repository": repo, "tag": tag}
	}
	if _, err := install.Run(chrt, vals); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	return func(t *testing.T) {
		un := action.NewUninstall(w.helmConfig(t))
		un.Wait, un.Timeout = true, 3*time.Minute
		if _, err := un.Run("anycast"); err != nil {
			t.Errorf("helm uninstall: %v", err)
		}
		// helm uninstall keeps the CRDs (crds.keep) and the namespace it created; a user removes both by hand.
		w.deleteCRDs(t)
		w.deleteNamespace(t)
		w.waitGone(t)
	}
}

func (w *world) helmConfig(t *testing.T) *action.Configuration {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = ptr.To(w.cluster.Kubeconfig)
	flags.Namespace = ptr.To(namespace)
	cfg := &action.Configuration{}
	if err := cfg.Init(flags, namespace, "secret", func(format string, v ...any) { t.Logf("helm: "+format, v...) }); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// olmInstall does what OLM does with the bundle: the CRDs and the other manifests, a ServiceAccount, Role and
// binding per permission and clusterPermission of the CSV, and the CSV's Deployment, whose manager deploys the
// agents' DaemonSet itself (--agent-image). The images are the ones built here, as in a bundle built with them.
func (w *world) olmInstall(t *testing.T) func(*testing.T) {
	dir := filepath.Join(w.root, "bundle/manifests")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	var csv operatorsv1alpha1.ClusterServiceVersion
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(e.Name(), "clusterserviceversion") {
			if err := yaml.UnmarshalStrict(w.setBundleImages(t, data), &csv); err != nil {
				t.Fatal(err)
			}
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatal(err)
		}
		if u.GetKind() != "CustomResourceDefinition" {
			u.SetNamespace(namespace)
		}
		objs = append(objs, u)
	}
	spec := csv.Spec.InstallStrategy.StrategySpec
	accounts := map[string]bool{}
	account := func(name string) {
		if !accounts[name] {
			accounts[name] = true
			objs = append(objs, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}})
		}
	}
	for i, p := range spec.ClusterPermissions {
		account(p.ServiceAccountName)
		name := fmt.Sprintf("olm-%s-%d", p.ServiceAccountName, i)
		objs = append(objs, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: p.Rules},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: p.ServiceAccountName, Namespace: namespace}}})
	}
	for i, p := range spec.Permissions {
		account(p.ServiceAccountName)
		name := fmt.Sprintf("olm-%s-%d", p.ServiceAccountName, i)
		objs = append(objs, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Rules: p.Rules},
			&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: p.ServiceAccountName, Namespace: namespace}}})
	}
	for _, d := range spec.DeploymentSpecs {
		objs = append(objs, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: namespace, Labels: d.Label}, Spec: d.Spec})
	}
	ctx := context.Background()
	for _, o := range objs {
		if err := w.k8s.Create(ctx, o); err != nil {
			t.Fatalf("OLM path: creating %T %s: %v", o, o.GetName(), err)
		}
	}
	return func(t *testing.T) {
		// OLM deletes what it created when the CSV goes; the manager's own DaemonSet and admission policies are owned
		// by its Deployment's namespace and go with it (their cluster-scoped policies are checked below).
		for i := len(objs) - 1; i >= 0; i-- {
			if _, ok := objs[i].(*corev1.Namespace); ok {
				continue
			}
			if err := w.k8s.Delete(ctx, objs[i]); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("OLM path: deleting %T %s: %v", objs[i], objs[i].GetName(), err)
			}
		}
		w.deleteNamespace(t)
		w.waitGone(t)
	}
}

func (w *world) setBundleImages(t *testing.T, csv []byte) []byte {
	t.Helper()
	var out = csv
	for _, c := range []string{"manager", "agent"} {
		re := "ghcr.io/anycast-operator/" + c + ":v"
		i := bytes.Index(out, []byte(re))
		if i < 0 {
			t.Fatalf("the CSV has no %s image", c)
		}
		end := i + bytes.IndexAny(out[i:], "\n\" ")
		out = bytes.ReplaceAll(out, out[i:end], []byte(w.images[c]))
	}
	return out
}

func (w *world) kubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(w.bin, "kubectl"), append([]string{"--kubeconfig", w.cluster.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitRollout waits until the Deployment or DaemonSet has every replica updated and available, and reports why not.
func (w *world) waitRollout(t *testing.T, kind, name string) {
	t.Helper()
	poll(t, 4*time.Minute, kind+" "+name+" rolled out", func() (bool, string) {
		key := client.ObjectKey{Namespace: namespace, Name: name}
		switch kind {
		case "Deployment":
			var d appsv1.Deployment
			if err := w.k8s.Get(context.Background(), key, &d); err != nil {
				return false, err.Error()
			}
			want := ptr.Deref(d.Spec.Replicas, 1)
			return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == want && d.Status.AvailableReplicas == want,
				fmt.Sprintf("%+v; %s", d.Status, w.podsSummary())
		default:
			var ds appsv1.DaemonSet
			if err := w.k8s.Get(context.Background(), key, &ds); err != nil {
				return false, err.Error()
			}
			s := ds.Status
			return s.ObservedGeneration == ds.Generation && s.DesiredNumberScheduled == 1 && s.UpdatedNumberScheduled == 1 && s.NumberAvailable == 1,
				fmt.Sprintf("%+v; %s", s, w.podsSummary())
		}
	})
}

// podsSummary says what each pod of the namespace is doing, with its events, for a failure message.
func (w *world) podsSummary() string {
	ctx := context.Background()
	var pods corev1.PodList
	if err := w.k8s.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "\npod %s: %s", p.Name, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d %+v]", cs.Name, cs.Ready, cs.RestartCount, cs.State)
			if cs.RestartCount > 0 || !cs.Ready {
				if l := w.cluster.ContainerLogs(namespace, p.Name, string(p.UID), cs.Name, 15); l != "" {
					fmt.Fprintf(&b, "\n  %s's log:\n%s", cs.Name, l)
				}
			}
		}
	}
	var events corev1.EventList
	if err := w.k8s.List(ctx, &events, client.InNamespace(namespace)); err == nil {
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "\nevent %s %s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

func (w *world) deleteCRDs(t *testing.T) {
	for _, n := range []string{"anycastprefixes", "bgpsessionclaims", "healthpolicies", "nodeannouncements"} {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		u.SetName(n + ".anycast.dev")
		if err := w.k8s.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting CRD %s: %v", u.GetName(), err)
		}
	}
}

func (w *world) deleteNamespace(t *testing.T) {
	err := w.k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting namespace %s: %v", namespace, err)
	}
}

// waitGone waits until the namespace, the CRDs and every cluster-scoped object of the operator are gone, so that
// the next install path starts from a clean cluster.
func (w *world) waitGone(t *testing.T) {
	t.Helper()
	poll(t, 3*time.Minute, "the operator uninstalled", func() (bool, string) {
		ctx := context.Background()
		var left []string
		if err := w.k8s.Get(ctx, client.ObjectKey{Name: namespace}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
			left = append(left, "namespace "+namespace)
		}
		var crs rbacv1.ClusterRoleList
		var vaps admissionregistrationv1.ValidatingAdmissionPolicyList
		var bindings admissionregistrationv1.ValidatingAdmissionPolicyBindingList
		var crds apiextensionsv1.CustomResourceDefinitionList
		if err := errors.Join(w.k8s.List(ctx, &crs), w.k8s.List(ctx, &vaps), w.k8s.List(ctx, &bindings), w.k8s.List(ctx, &crds)); err != nil {
			return false, err.Error()
		}
		var names []string
		for _, r := range crs.Items {
			names = append(names, "ClusterRole "+r.Name)
		}
		for _, p := range vaps.Items {
			names = append(names, "ValidatingAdmissionPolicy "+p.Name)
		}
		for _, b := range bindings.Items {
			names = append(names, "ValidatingAdmissionPolicyBinding "+b.Name)
		}
		for _, c := range crds.Items {
			names = append(names, "CustomResourceDefinition "+c.Name)
		}
		for _, n := range names {
			if strings.Contains(n, "anycast") {
				left = append(left, n)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

func poll(t *testing.T, limit time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		var done bool
		if done, last = ok(); done {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not after %v: %s", what, limit, last)
}
