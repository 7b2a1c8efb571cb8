// Package agentdeploy is the agents' DaemonSet as config/agent/daemonset.yaml declares it (make manifests copies
// the file here), for a manager that deploys its agents itself: an OLM bundle cannot carry a DaemonSet.
package agentdeploy

import (
	_ "embed"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

//go:embed daemonset.yaml
var manifest []byte

// DaemonSet returns the agents' DaemonSet in namespace, running image with the manager's backend.
func DaemonSet(namespace, image, backend string) (*appsv1.DaemonSet, error) {
	ds := &appsv1.DaemonSet{}
	if err := yaml.UnmarshalStrict(manifest, ds); err != nil {
		return nil, fmt.Errorf("the embedded agent DaemonSet: %w", err)
	}
	ds.Namespace = namespace
	for i := range ds.Spec.Template.Spec.InitContainers {
		ds.Spec.Template.Spec.InitContainers[i].Image = image // the state directory's: the agent's own binary
	}
	c := &ds.Spec.Template.Spec.Containers[0]
	c.Image = image
	for i, a := range c.Args {
		if strings.HasPrefix(a, "--backend=") {
			c.Args[i] = "--backend=" + backend
		}
	}
	return ds, nil
}

//go:embed admission.yaml
var admission []byte

// AdmissionPolicies returns the admission policies of config/admission (the agents confined to their own node, the
// manager to its own Secrets), for a manager that deploys its agents itself: an OLM bundle cannot carry them either.
func AdmissionPolicies() ([]client.Object, error) {
	var out []client.Object
	for _, doc := range strings.Split(string(admission), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("the embedded admission policies: %w", err)
		}
		var obj client.Object
		switch meta.Kind {
		case "ValidatingAdmissionPolicy":
			obj = &admissionregistrationv1.ValidatingAdmissionPolicy{}
		case "ValidatingAdmissionPolicyBinding":
			obj = &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
		default:
			return nil, fmt.Errorf("the embedded admission policies: unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("the embedded admission policies: %w", err)
		}
		out = append(out, obj)
	}
	return out, nil
}
