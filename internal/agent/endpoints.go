package agent

import (
	"context"
	"fmt"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
)

// endpointWatches answers serviceEndpoints checks: one informer per Service named in a check, on that Service's
// EndpointSlices only (label kubernetes.io/service-name), started the first time a check asks.
type endpointWatches struct {
	ctx  context.Context
	kube *kube
	node string

	mu        sync.Mutex
	informers map[string]toolscache.SharedIndexInformer
}

func newEndpointWatches(ctx context.Context, k *kube, node string) *endpointWatches {
	return &endpointWatches{ctx: ctx, kube: k, node: node, informers: map[string]toolscache.SharedIndexInformer{}}
}

// Ready reports whether the Service has a ready endpoint on this node.
func (w *endpointWatches) Ready(namespace, name string) (bool, error) {
	inf := w.informer(namespace, name)
	if !inf.HasSynced() {
		return false, fmt.Errorf("endpoints of Service %s/%s not synced yet", namespace, name)
	}
	for _, obj := range inf.GetStore().List() {
		slice, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, ep := range slice.Endpoints {
			// A nil ready condition means ready (EndpointSlice API).
			if ep.NodeName != nil && *ep.NodeName == w.node && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				return true, nil
			}
		}
	}
	return false, nil
}

func (w *endpointWatches) informer(namespace, name string) toolscache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := namespace + "/" + name
	if inf, ok := w.informers[key]; ok {
		return inf
	}
	lw := listWatch{client: w.kube.discovery, namespace: namespace, resource: "endpointslices", label: discoveryv1.LabelServiceName + "=" + name,
		newList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} }}
	// No resync: the watch keeps the store current, and a resync would only wake the agent for nothing.
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{ListWithContextFunc: lw.list, WatchFuncWithContext: lw.watch},
		&discoveryv1.EndpointSlice{}, 0, toolscache.Indexers{})
	go inf.RunWithContext(w.ctx)
	w.informers[key] = inf
	return inf
}
