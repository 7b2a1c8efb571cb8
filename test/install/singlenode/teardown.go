package singlenode

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// stop tears the cluster down in the order that leaves nothing behind: pods first (their containers live in
// kubepods and their shims outside this process's tree), through the API while it runs and then through the CRI
// (which runs CNI DEL), then containerd, the control plane, and the host's settings.
func (c *Cluster) stop(t testing.TB) {
	if t.Failed() {
		c.dumpLogs(t)
	}
	if c.Client != nil && c.procs["kubelet"] != nil && !c.procs["kubelet"].exited() {
		c.deletePods(t)
	}
	c.procs["kubelet"].stop(15 * time.Second)
	if c.procs["containerd"] != nil {
		if err := removeSandboxes(); err != nil {
			t.Errorf("removing the pod sandboxes through the CRI: %v", err)
		}
	}
	c.procs["containerd"].stop(15 * time.Second)
	if pids := killMatching("containerd-shim", containerdSocket); len(pids) > 0 {
		t.Errorf("containerd shims outlived their sandboxes and were killed: %v", pids)
	}
	// The Service address goes before the API server (the controller manager and the scheduler use the node's
	// address, not it); then the rest of the control plane, last started first stopped.
	if c.unforward != nil {
		c.unforward()
	}
	for i := len(c.order) - 1; i >= 0; i-- {
		c.procs[c.order[i]].stop(10 * time.Second)
	}
	if err := unmountUnder(c.Dir); err != nil {
		t.Errorf("unmounting what the cluster left under %s: %v", c.Dir, err)
	}
	for _, err := range c.host.restore() {
		t.Errorf("putting the host back: %v", err)
	}
	if os.Getenv("SINGLENODE_KEEP") == "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			t.Errorf("removing %s: %v", c.Dir, err)
		}
	} else {
		t.Logf("SINGLENODE_KEEP: the cluster's directory is kept: %s", c.Dir)
	}
	if err := os.Remove(markerPath); err != nil {
		t.Errorf("removing %s: %v", markerPath, err)
	}
	left, err := c.host.diff()
	if err != nil {
		t.Errorf("checking the host: %v", err)
	}
	for _, l := range left {
		t.Errorf("the cluster left the host changed: %s", l)
	}
}

// deletePods deletes every workload and pod and waits (bounded) until the kubelet has stopped them, so that each
// pod's containers get their grace period (what a test left running after a failure, too).
func (c *Cluster) deletePods(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var namespaces corev1.NamespaceList
	if err := c.Client.List(ctx, &namespaces); err != nil {
		t.Logf("listing namespaces at teardown: %v", err)
		return
	}
	for _, workload := range []client.Object{&appsv1.DaemonSet{}, &appsv1.Deployment{}, &appsv1.ReplicaSet{}} {
		for _, ns := range namespaces.Items {
			if err := c.Client.DeleteAllOf(ctx, workload, client.InNamespace(ns.Name)); err != nil {
				t.Logf("deleting %T in %s at teardown: %v", workload, ns.Name, err)
			}
		}
	}
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods); err != nil {
		t.Logf("listing pods at teardown: %v", err)
		return
	}
	for i := range pods.Items {
		_ = c.Client.Delete(ctx, &pods.Items[i], client.GracePeriodSeconds(5))
	}
	for ctx.Err() == nil {
		if err := c.Client.List(ctx, &pods); err == nil && len(pods.Items) == 0 {
			return
		}
		time.Sleep(time.Second)
	}
	t.Logf("pods still listed at teardown: %d", len(pods.Items))
}

// removeSandboxes stops and removes every pod sandbox containerd still has, which runs CNI DEL for each.
func removeSandboxes() error {
	conn, err := grpc.NewClient("unix://"+containerdSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("ListPodSandbox: %w", err)
	}
	var errs []string
	for _, s := range list.Items {
		if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("stop %s: %v", s.Metadata.GetName(), err))
		}
		if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", s.Metadata.GetName(), err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (c *Cluster) dumpLogs(t testing.TB) {
	for _, n := range c.order {
		t.Log(c.procs[n].tail(40))
	}
}
