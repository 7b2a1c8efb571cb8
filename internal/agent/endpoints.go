package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// endpointWatches answers serviceEndpoints checks: one informer per Service named in a check, on that Service's
// EndpointSlices only (label kubernetes.io/service-name), started the first time a check asks.
type endpointWatches struct {
	ctx  context.Context
	cs   kubernetes.Interface
	node string

	mu        sync.Mutex
	informers map[string]toolscache.SharedIndexInformer
}

func newEndpointWatches(ctx context.Context, cs kubernetes.Interface, node string) *endpointWatches {
	return &endpointWatches{ctx: ctx, cs: cs, node: node, informers: map[string]toolscache.SharedIndexInformer{}}
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
	selector := discoveryv1.LabelServiceName + "=" + name
	slices := w.cs.DiscoveryV1().EndpointSlices(namespace)
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return slices.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return slices.Watch(ctx, o)
		},
	}, &discoveryv1.EndpointSlice{}, 10*time.Minute, toolscache.Indexers{})
	go inf.RunWithContext(w.ctx)
	w.informers[key] = inf
	return inf
}
