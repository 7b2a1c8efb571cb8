package agent

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// RunOnNode connects an agent to the API server and runs it until ctx ends. It watches only its own
// NodeAnnouncement (a field selector on the name) and the operator namespace's Secrets and Leases. If the API server
// goes away, the cache keeps the last NodeAnnouncement and the agent keeps deciding on it.
func RunOnNode(ctx context.Context, restCfg *rest.Config, scheme *runtime.Scheme, cfg Config, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) error {
	inNamespace := cache.ByObject{Namespaces: map[string]cache.Config{cfg.Namespace: {}}}
	c, err := cache.New(restCfg, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&anycastv1.NodeAnnouncement{}: {Field: fields.OneTermEqualSelector("metadata.name", cfg.NodeName)},
		&corev1.Secret{}:              inNamespace,
		&coordinationv1.Lease{}:       inNamespace,
	}})
	if err != nil {
		return fmt.Errorf("creating the cache: %w", err)
	}
	cl, err := client.New(restCfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return fmt.Errorf("creating the client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the clientset: %w", err)
	}
	cfg.Endpoints = newEndpointWatches(ctx, cs, cfg.NodeName).Ready
	a := New(cfg, cl, sp, clk, log)
	inf, err := c.GetInformer(ctx, &anycastv1.NodeAnnouncement{})
	if err != nil {
		return err
	}
	observe := func(obj any) {
		if na, ok := obj.(*anycastv1.NodeAnnouncement); ok {
			a.Observe(na.DeepCopy())
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
		DeleteFunc: func(any) { a.Observe(nil) },
	}); err != nil {
		return err
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			log.Error(err, "Cache stopped")
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the cache did not sync")
	}
	return a.Run(ctx)
}
