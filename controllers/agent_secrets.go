package controllers

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// AgentSecretsRole names the Role, and its RoleBinding to the agents' ServiceAccount, through which the agents read
// Secrets: exactly those the claims reference, by name. RBAC cannot follow references, so the manager keeps the
// Role's resourceNames in step with the claims.
const AgentSecretsRole = "anycast-agent-secrets"

// AgentServiceAccount is the agents' ServiceAccount in the operator's namespace.
const AgentServiceAccount = "anycast-agent"

// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch,namespace=anycast-system

// agentSecretsRBAC is the Role and RoleBinding that let the agents read the Secrets they use: the NetActuate API
// keys of the claims, and the peers' MD5 passwords when the agents open the sessions themselves (bird, embedded;
// with a Kubernetes BGP stack the stack reads them). With nothing referenced the Role has no rule at all: an empty
// resourceNames would mean every Secret.
func (r *PlannerReconciler) agentSecretsRBAC(in plan.Input) []client.Object {
	var names []string
	for _, c := range in.Claims {
		if c.DeletionTimestamp != nil {
			continue
		}
		if s := c.Spec.Static; s != nil && r.Backend == nil {
			for _, p := range s.Peers {
				if p.PasswordSecretRef != nil {
					names = append(names, p.PasswordSecretRef.Name)
				}
			}
		}
		if n := c.Spec.NetActuate; n != nil && n.APIKeySecretRef != nil {
			names = append(names, n.APIKeySecretRef.Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: AgentSecretsRole, Namespace: r.Namespace}, Rules: []rbacv1.PolicyRule{}}
	if len(names) > 0 {
		role.Rules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: names, Verbs: []string{"get", "list", "watch"}}}
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: AgentSecretsRole, Namespace: r.Namespace},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: AgentSecretsRole},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: AgentServiceAccount, Namespace: r.Namespace}}}
	return []client.Object{role, binding}
}
