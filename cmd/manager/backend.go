package main

import (
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/calico"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
)

// stackOptions are the flags of the Kubernetes BGP stack backends.
type stackOptions struct {
	metallbNamespace, metallbMode string
	frrK8sNamespace               string
	calicoNamespace               string
	ciliumSecretsNamespace        string
}

func (o *stackOptions) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.metallbNamespace, "metallb-namespace", "metallb-system", "metallb backend: the namespace MetalLB runs in, where its objects go.")
	fs.StringVar(&o.metallbMode, "metallb-mode", string(metallb.FRRK8s), "metallb backend: how MetalLB speaks BGP, frr-k8s (MetalLB's default) or native; native has no AS-path prepend, graceful restart or keepaliveTime.")
	fs.StringVar(&o.ciliumSecretsNamespace, "cilium-secrets-namespace", "kube-system", "cilium backend: Cilium's BGP secrets namespace (Helm bgpControlPlane.secretsNamespace.name), where peer password Secrets must be.")
	fs.StringVar(&o.frrK8sNamespace, "frr-k8s-namespace", "", "metallb backend, frr-k8s mode: where frr-k8s publishes BGPSessionStates (default: --metallb-namespace; frr-k8s-system for a standalone frr-k8s).")
	fs.StringVar(&o.calicoNamespace, "calico-namespace", "calico-system", "calico backend: calico-node's namespace (kube-system for manifest installs), where BGPPeer password Secrets must be.")
}

func (o *stackOptions) validate() error {
	if o.metallbMode != string(metallb.FRRK8s) && o.metallbMode != string(metallb.Native) {
		return fmt.Errorf("--metallb-mode=%q: want frr-k8s or native", o.metallbMode)
	}
	return nil
}

// backend returns the backend of that name; nil for bird and embedded, where the agents announce.
func (o *stackOptions) backend(name string, secrets backend.Secrets) (controllers.Backend, error) {
	switch name {
	case backend.MetalLB:
		frr := o.frrK8sNamespace
		if frr == "" {
			frr = o.metallbNamespace
		}
		return metallb.Translator{Namespace: o.metallbNamespace, Mode: metallb.Mode(o.metallbMode), Secrets: secrets, FRRK8sNamespace: frr}, nil
	case backend.Calico:
		return calico.Translator{Namespace: o.calicoNamespace, Secrets: secrets}, nil
	case backend.Cilium:
		return cilium.Translator{SecretsNamespace: o.ciliumSecretsNamespace, Secrets: secrets}, nil
	}
	return nil, nil
}

// servesKinds fails with a clear message when the cluster does not serve a kind the backend writes or reads: the
// stack, or its CRDs, are not installed.
func servesKinds(mapper meta.RESTMapper, name string, b controllers.Backend) error {
	var gvks []schema.GroupVersionKind
	for _, k := range b.Kinds() {
		gvks = append(gvks, k.GroupVersionKind)
	}
	if sb, ok := b.(controllers.SharingBackend); ok {
		gvks = append(gvks, sb.SharedKinds()...)
	}
	if sr, ok := b.(controllers.SessionReporter); ok {
		gvks = append(gvks, sr.SessionKinds()...)
	}
	for _, gvk := range gvks {
		if _, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("--backend=%s: the cluster does not serve %s %s (is the stack installed, with its CRDs?): %w", name, gvk.GroupVersion(), gvk.Kind, err)
		}
	}
	return nil
}

// agentIgnores is what the agents' own speakers do not carry out, for the backends where they announce.
func agentIgnores(name string) func(anycastv1.BGPSessionSettings) []string {
	if name != backend.Embedded {
		return nil // BIRD carries out every session setting
	}
	const bfd = "bfd (the embedded speaker, GoBGP, has no BFD; use --backend=bird for BFD)"
	return func(s anycastv1.BGPSessionSettings) []string {
		if s.BFD != nil {
			return []string{bfd}
		}
		return nil
	}
}
