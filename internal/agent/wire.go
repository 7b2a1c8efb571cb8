package agent

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// RunOnNode connects an agent to the API server and runs it until ctx ends. It watches only its own
// NodeAnnouncement (a field selector on the name). It does not wait for the API server: the decision loop starts at
// once, acts on the NodeAnnouncement saved in the state directory if the API server has not answered within
// ResumeAfter, and keeps deciding on the last one it saw while the API server is unreachable.
func RunOnNode(ctx context.Context, restCfg *rest.Config, cfg Config, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) error {
	k, err := newKube(restCfg)
	if err != nil {
		return err
	}
	if cfg.Endpoints == nil {
		cfg.Endpoints = newEndpointWatches(ctx, k, cfg.NodeName).Ready
	}
	a := newAgent(cfg, k, sp, clk, log)
	if err := a.watchSpec(ctx); err != nil {
		return err
	}
	return a.Run(ctx)
}

// Start runs the agent in the background; the returned function stops it and waits (for tests and the demo).
func Start(ctx context.Context, restCfg *rest.Config, cfg Config, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) (*Agent, func(), error) {
	k, err := newKube(restCfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	if cfg.Endpoints == nil {
		cfg.Endpoints = newEndpointWatches(ctx, k, cfg.NodeName).Ready
	}
	a := newAgent(cfg, k, sp, clk, log)
	if err := a.watchSpec(ctx); err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			log.Error(err, "Agent stopped")
		}
	}()
	return a, func() { cancel(); <-done }, nil
}

// watchSpec feeds the loop every version of the node's NodeAnnouncement.
func (a *Agent) watchSpec(ctx context.Context) error {
	lw := listWatch{client: a.kube.anycast, resource: "nodeannouncements", field: fields.OneTermEqualSelector("metadata.name", a.cfg.NodeName).String(),
		newList: func() runtime.Object { return &anycastv1.NodeAnnouncementList{} }}
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{ListWithContextFunc: lw.list, WatchFuncWithContext: lw.watch},
		&anycastv1.NodeAnnouncement{}, 0, toolscache.Indexers{})
	observe := func(obj any) {
		if na, ok := obj.(*anycastv1.NodeAnnouncement); ok {
			a.specSynced.Store(true)
			a.Observe(na.DeepCopy())
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
		DeleteFunc: func(any) { a.Observe(nil) },
	}); err != nil {
		return fmt.Errorf("watching the NodeAnnouncement: %w", err)
	}
	go inf.RunWithContext(ctx)
	go func() {
		// Synced with no NodeAnnouncement: the manager has planned nothing for this node (yet).
		if toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			a.specSynced.Store(true)
		}
	}()
	return nil
}
