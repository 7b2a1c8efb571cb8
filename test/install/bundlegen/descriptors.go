package bundlegen

import (
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

const (
	textDescriptor       = "urn:alm:descriptor:com.tectonic.ui:text"
	numberDescriptor     = "urn:alm:descriptor:com.tectonic.ui:number"
	booleanDescriptor    = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch"
	conditionsDescriptor = "urn:alm:descriptor:io.kubernetes.conditions"
	advancedDescriptor   = "urn:alm:descriptor:com.tectonic.ui:advanced"
)

type field struct{ path, name, desc, xd string }

// descriptors of each kind: what the OLM console shows for its spec and status.
var descriptors = map[string]struct {
	display, description string
	spec, status         []field
	// resources are the kinds the operator makes for this one.
	resources []operatorsv1alpha1.APIResourceReference
}{
	"AnycastPrefix": {"Anycast Prefix", "What to announce, where, and with which BGP attributes.",
		[]field{
			{"prefixes", "Prefixes", "IPv4 and IPv6 prefixes to announce", textDescriptor},
			{"sessionClaims", "Session claims", "BGPSessionClaims whose sessions carry the prefixes", textDescriptor},
			{"healthPolicyRef.name", "Health policy", "The HealthPolicy that decides when a node announces", textDescriptor},
			{"safety.maxWithdrawn", "Max withdrawn", "How many eligible nodes health may withdraw at once", textDescriptor},
			{"paused", "Paused", "Keep what is announced and act on nothing new", booleanDescriptor},
			{"attributes", "BGP attributes", "Communities, local preference, MED, AS-path prepend", advancedDescriptor},
		},
		[]field{
			{"eligibleNodes", "Eligible nodes", "Nodes selected by the claims and the node selector", numberDescriptor},
			{"announcingNodes", "Announcing nodes", "Nodes announcing the prefixes now", numberDescriptor},
			{"conditions", "Conditions", "Ready, Reconciling, Stalled, Degraded, Conflict, SettingsIgnored", conditionsDescriptor},
		},
		[]operatorsv1alpha1.APIResourceReference{{Name: "nodeannouncements.anycast.dev", Kind: "NodeAnnouncement", Version: "v1alpha1"}}},
	"HealthPolicy": {"Health Policy", "When a node is fit to announce: checks, rise/fall thresholds and dampening.",
		[]field{
			{"checks", "Checks", "HTTP, TCP, DNS, gRPC or Service-endpoint checks", advancedDescriptor},
			{"interval", "Interval", "Time between probes", textDescriptor},
			{"onUnhealthy", "On unhealthy", "Withdraw or Deprefer", textDescriptor},
		},
		[]field{
			{"unhealthyNodes", "Unhealthy nodes", "Nodes where the checks fail", numberDescriptor},
			{"conditions", "Conditions", "Ready, Reconciling, Stalled", conditionsDescriptor},
		}, nil},
	"BGPSessionClaim": {"BGP Session Claim", "The BGP sessions a set of nodes needs: static peers or provisioned through NetActuate.",
		[]field{
			{"localASN", "Local ASN", "The AS number the nodes speak as", numberDescriptor},
			{"static.peers", "Static peers", "Peers every selected node opens a session with", advancedDescriptor},
			{"netactuate.groupID", "NetActuate group", "The BGP group whose sessions are provisioned for each node", numberDescriptor},
		},
		[]field{
			{"boundNodes", "Bound nodes", "Nodes the claim selects", numberDescriptor},
			{"establishedSessions", "Established sessions", "Sessions in state Established", numberDescriptor},
			{"conditions", "Conditions", "Ready, Bound, Reconciling, Stalled, SettingsIgnored", conditionsDescriptor},
		}, nil},
	"NodeAnnouncement": {"Node Announcement", "Generated: one per node, the manager's plan (spec) and the node agent's decisions (status).",
		[]field{{"drain", "Drain", "The node is being drained (anycast.dev/drain on the Node)", booleanDescriptor}},
		[]field{
			{"agentVersion", "Agent version", "The node agent's version", textDescriptor},
			{"conditions", "Conditions", "Ready and the agent's own conditions", conditionsDescriptor},
		}, nil},
}

func describe(crd *apiextensionsv1.CustomResourceDefinition) operatorsv1alpha1.CRDDescription {
	d := descriptors[crd.Spec.Names.Kind]
	out := operatorsv1alpha1.CRDDescription{Name: crd.Name, Version: crd.Spec.Versions[0].Name, Kind: crd.Spec.Names.Kind,
		DisplayName: d.display, Description: d.description, Resources: d.resources}
	for _, f := range d.spec {
		out.SpecDescriptors = append(out.SpecDescriptors, operatorsv1alpha1.SpecDescriptor{Path: f.path, DisplayName: f.name, Description: f.desc, XDescriptors: []string{f.xd}})
	}
	for _, f := range d.status {
		out.StatusDescriptors = append(out.StatusDescriptors, operatorsv1alpha1.StatusDescriptor{Path: f.path, DisplayName: f.name, Description: f.desc, XDescriptors: []string{f.xd}})
	}
	return out
}
