package agent

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// The agent talks to the API server through client-go's REST client alone, with a scheme of the few kinds it uses:
// no controller-runtime, no generated clientset (whose scheme registers every API group at start).

// Deadlines of the agent's API calls. Watches have none (the server ends them, and HTTP/2 pings detect a dead
// connection); every other call has one, so no effector waits on a hung API server for longer.
const (
	apiCallTimeout = 10 * time.Second
)

// kube is the agent's API client: one REST client per group version, each call with a deadline but watches.
type kube struct {
	anycast, core, coordination, discovery, events *rest.RESTClient
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{anycastv1.AddToScheme, corev1.AddToScheme, coordinationv1.AddToScheme,
		discoveryv1.AddToScheme, eventsv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func newKube(cfg *rest.Config) (*kube, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()
	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		c.ContentType = runtime.ContentTypeJSON
		if c.UserAgent == "" {
			c.UserAgent = "anycast-agent"
		}
		return rest.RESTClientFor(c)
	}
	var k kube
	for _, x := range []struct {
		dst  **rest.RESTClient
		gv   schema.GroupVersion
		path string
	}{
		{&k.anycast, anycastv1.GroupVersion, "/apis"},
		{&k.core, corev1.SchemeGroupVersion, "/api"},
		{&k.coordination, coordinationv1.SchemeGroupVersion, "/apis"},
		{&k.discovery, discoveryv1.SchemeGroupVersion, "/apis"},
		{&k.events, eventsv1.SchemeGroupVersion, "/apis"},
	} {
		c, err := client(x.gv, x.path)
		if err != nil {
			return nil, fmt.Errorf("API client for %s: %w", x.gv, err)
		}
		*x.dst = c
	}
	return &k, nil
}

// listWatch lists and watches one resource, narrowed by a field or label selector.
type listWatch struct {
	client    *rest.RESTClient
	namespace string
	resource  string
	field     string // a field selector, such as metadata.name=edge-1
	label     string
	newList   func() runtime.Object
}

func (l listWatch) list(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	o.FieldSelector, o.LabelSelector = l.field, l.label
	out := l.newList()
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	err := l.client.Get().NamespaceIfScoped(l.namespace, l.namespace != "").Resource(l.resource).
		VersionedParams(&o, metav1.ParameterCodec).Do(ctx).Into(out)
	return out, err
}

func (l listWatch) watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	o.FieldSelector, o.LabelSelector, o.Watch = l.field, l.label, true
	return l.client.Get().NamespaceIfScoped(l.namespace, l.namespace != "").Resource(l.resource).
		VersionedParams(&o, metav1.ParameterCodec).Watch(ctx)
}

// applyStatus writes a NodeAnnouncement's status by server-side apply under the agent's own field manager: what it
// stops reporting disappears, and the manager's spec is never touched.
func (k *kube) applyStatus(ctx context.Context, name string, st *anycastv1.NodeAnnouncementStatus) error {
	body, err := statusApplyBody(name, st)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return k.anycast.Patch(types.ApplyPatchType).Resource("nodeannouncements").Name(name).SubResource("status").
		Param("fieldManager", fieldManager).Param("force", "true").Body(body).Do(ctx).Error()
}

// fieldManager owns what the agent writes.
const fieldManager = "anycast-agent"

func (k *kube) getLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	var l coordinationv1.Lease
	err := k.coordination.Get().Namespace(namespace).Resource("leases").Name(name).Do(ctx).Into(&l)
	return &l, err
}

func (k *kube) createLease(ctx context.Context, l *coordinationv1.Lease) error {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return k.coordination.Post().Namespace(l.Namespace).Resource("leases").Body(l).Do(ctx).Error()
}

func (k *kube) updateLease(ctx context.Context, l *coordinationv1.Lease) error {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return k.coordination.Put().Namespace(l.Namespace).Resource("leases").Name(l.Name).Body(l).Do(ctx).Error()
}

func (k *kube) createEvent(ctx context.Context, e *eventsv1.Event) error {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return k.events.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(ctx).Error()
}

func (k *kube) patchEvent(ctx context.Context, namespace, name string, patch []byte) error {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return k.events.Patch(types.MergePatchType).Namespace(namespace).Resource("events").Name(name).Body(patch).Do(ctx).Error()
}
