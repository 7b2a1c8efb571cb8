package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// GetConditions returns the object's status conditions.
func (o *AnycastPrefix) GetConditions() []metav1.Condition { return o.Status.Conditions }

// GetConditions returns the object's status conditions.
func (o *HealthPolicy) GetConditions() []metav1.Condition { return o.Status.Conditions }

// GetConditions returns the object's status conditions.
func (o *BGPSessionClaim) GetConditions() []metav1.Condition { return o.Status.Conditions }

// GetConditions returns the object's status conditions.
func (o *NodeAnnouncement) GetConditions() []metav1.Condition { return o.Status.Conditions }
