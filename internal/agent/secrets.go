package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// secretStore holds the Secrets the node's claims reference, each watched on its own (a field selector on its name,
// which is also all the agent's RBAC allows), so that no decision reads a Secret from the API server. Until a watch
// has synced, the values saved in the state directory stand in (a restart while the API server is down).
type secretStore struct {
	kube      *kube
	namespace string
	notify    func() // something changed; never blocks

	mu      sync.Mutex
	watches map[string]*secretWatch
	saved   map[string]map[string][]byte
}

type secretWatch struct {
	informer toolscache.SharedIndexInformer
	cancel   context.CancelFunc
}

func newSecretStore(k *kube, namespace string, saved map[string]map[string][]byte, notify func()) *secretStore {
	return &secretStore{kube: k, namespace: namespace, notify: notify, watches: map[string]*secretWatch{}, saved: saved}
}

// want watches exactly the named Secrets; it never blocks.
func (s *secretStore) want(ctx context.Context, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, w := range s.watches {
		if !slices.Contains(names, name) {
			w.cancel()
			delete(s.watches, name)
		}
	}
	if s.kube == nil {
		return
	}
	for _, name := range names {
		if _, ok := s.watches[name]; ok {
			continue
		}
		lw := listWatch{client: s.kube.core, namespace: s.namespace, resource: "secrets", field: fields.OneTermEqualSelector("metadata.name", name).String(),
			newList: func() runtime.Object { return &corev1.SecretList{} }}
		inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{ListWithContextFunc: lw.list, WatchFuncWithContext: lw.watch},
			&corev1.Secret{}, 0, toolscache.Indexers{})
		changed := func(any) { s.notify() }
		_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: changed, UpdateFunc: func(_, o any) { changed(o) }, DeleteFunc: changed})
		wctx, cancel := context.WithCancel(ctx)
		go inf.RunWithContext(wctx)
		s.watches[name] = &secretWatch{informer: inf, cancel: cancel}
	}
}

// value returns a key of a Secret as known now, from memory.
func (s *secretStore) value(ref *anycastv1.SecretKeyRef) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.dataLocked(ref.Name)
	if err != nil {
		return "", err
	}
	v, ok := data[ref.Key]
	if !ok {
		return "", fmt.Errorf("key %q not in Secret %s/%s", ref.Key, s.namespace, ref.Name)
	}
	return string(v), nil
}

func (s *secretStore) dataLocked(name string) (map[string][]byte, error) {
	if w := s.watches[name]; w != nil && w.informer.HasSynced() {
		obj, ok, _ := w.informer.GetStore().GetByKey(s.namespace + "/" + name)
		if !ok {
			return nil, fmt.Errorf("secret %s/%s not found", s.namespace, name)
		}
		return obj.(*corev1.Secret).Data, nil
	}
	if data, ok := s.saved[name]; ok {
		return data, nil
	}
	return nil, fmt.Errorf("secret %s/%s not read yet (waiting for the API server)", s.namespace, name)
}

// wait waits until the Secret's watch has synced (or ctx ends); for callers that run on their own goroutine.
func (s *secretStore) wait(ctx context.Context, name string) {
	s.mu.Lock()
	w := s.watches[name]
	s.mu.Unlock()
	if w != nil {
		toolscache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced)
	}
}

// snapshot returns the values of the named Secrets known now, to be saved in the state directory.
func (s *secretStore) snapshot(names []string) map[string]map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string][]byte{}
	for _, name := range names {
		if data, err := s.dataLocked(name); err == nil {
			out[name] = maps.Clone(data)
		}
	}
	return out
}
