package singlenode

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

const killedChildEnv = "SINGLENODE_KILLED_CHILD"

// TestKilledRunIsCleanedUp kills a test binary whose cluster runs a pod (SIGKILL: no cleanup runs), and checks that
// the next run's removeStale puts the host back as it was before that run: its daemons die with it (deathsig), but
// the pod's shim and container, its network namespace and veth, the kubepods cgroups, the kubelet's kernel settings,
// the address on lo and containerd's socket directory stay until removeStale.
func TestKilledRunIsCleanedUp(t *testing.T) {
	if os.Getenv(killedChildEnv) != "" {
		runClusterUntilKilled(t)
		return // not reached: the parent kills this process
	}
	_, bin := locate(t)
	if msg := Prerequisites(bin); msg != "" {
		t.Fatal(msg)
	}
	before, err := snapshot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKilledRunIsCleanedUp$", "-test.v")
	child.Env = append(os.Environ(), killedChildEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = child.Stdout
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var log []string
	ready := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "SINGLENODE-READY") {
			ready = true
			break
		}
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	if !ready {
		t.Fatalf("the child's cluster never ran its pod:\n%s", strings.Join(log, "\n"))
	}
	if _, err := os.Stat(markerPath); err != nil {
		t.Fatalf("the killed run left no marker: %v", err)
	}
	left, err := before.diff()
	if err != nil || len(left) == 0 {
		t.Fatalf("the killed run left nothing behind (%v): this test proves nothing", err)
	}
	t.Logf("the killed run left %d differences: %s", len(left), strings.Join(left, "; "))
	if err := removeStale(t); err != nil {
		t.Errorf("removeStale: %v", err)
	}
	netlab.RemoveStale()
	left, err = before.diff()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range left {
		t.Errorf("after removeStale the host still differs: %s", l)
	}
	if pids := killMatching("containerd-shim", containerdSocket); len(pids) > 0 {
		t.Errorf("shims still ran after removeStale: %v", pids)
	}
}

// runClusterUntilKilled is the child: a cluster with one pod on the bridge network, then it waits to be killed.
func runClusterUntilKilled(t *testing.T) {
	root, bin := locate(t)
	lab := netlab.New(t, 1)
	pause := filepath.Join(root, "bin/images/pause.tar")
	tag, err := ArchiveTag(pause)
	if err != nil {
		t.Fatal(err)
	}
	c := Start(t, Options{BinDir: bin, NodeIP: lab.Nodes4[0], PauseImage: pause, PauseTag: tag})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "left-behind", Namespace: "default"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "pause", Image: tag, ImagePullPolicy: corev1.PullNever}}}}
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// The default ServiceAccount comes from the controller manager a moment after the start.
		err := c.Client.Create(ctx, pod)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod) != nil || pod.Status.Phase != corev1.PodRunning {
		if time.Now().After(deadline) {
			t.Fatalf("the pod is not running: %+v", pod.Status)
		}
		time.Sleep(500 * time.Millisecond)
	}
	os.Stdout.WriteString("SINGLENODE-READY\n")
	select {} // the parent kills this process here
}

// locate is the repository's root and the directory of the cluster's binaries.
func locate(t *testing.T) (root, bin string) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if bin, err = testenv.AssetsDir(root); err != nil {
		t.Fatal(err)
	}
	return root, bin
}
