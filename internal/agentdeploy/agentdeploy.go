// Package agentdeploy is the agents' DaemonSet as config/agent/daemonset.yaml declares it (make manifests copies
// the file here), for a manager that deploys its agents itself: an OLM bundle cannot carry a DaemonSet.
package agentdeploy

import (
	_ "embed"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
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
