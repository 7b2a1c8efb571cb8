package v1alpha1

// Condition types. Ready is the positive summary (kubectl, Argo CD, Helm); Reconciling and Stalled are the
// "abnormal-true" pair kstatus and Flux read; the rest say why a prefix is not fully in effect.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	// ConditionDegraded: the prefix is planned but not everywhere it could be (withdrawn nodes, export policy).
	ConditionDegraded = "Degraded"
	// ConditionSettingsIgnored: the cluster's BGP backend does not carry out some settings of the object (BFD on
	// Cilium, MED on MetalLB, ...); the message names them. False when everything is carried out.
	ConditionSettingsIgnored = "SettingsIgnored"
	// ConditionConflict: the prefix overlaps an older AnycastPrefix and is not planned.
	ConditionConflict = "Conflict"
	// ConditionBound: a claim selects at least one node.
	ConditionBound = "Bound"
)

// Condition reasons.
const (
	ReasonAnnounced           = "Announced"
	ReasonNotAnnounced        = "NotAnnounced"
	ReasonAwaitingAgents      = "AwaitingAgents"
	ReasonNoEligibleNodes     = "NoEligibleNodes"
	ReasonOverlap             = "Overlap"
	ReasonNoConflict          = "NoConflict"
	ReasonClaimNotFound       = "ClaimNotFound"
	ReasonHealthPolicyMissing = "HealthPolicyNotFound"
	ReasonExportDenied        = "ExportDenied"
	ReasonMaxPrefixesExceeded = "MaxPrefixesExceeded"
	ReasonNodesWithdrawn      = "NodesWithdrawn"
	ReasonMaxWithdrawnReached = "MaxWithdrawnReached"
	ReasonPaused              = "Paused"
	ReasonAsExpected          = "AsExpected"
	ReasonNodesSelected       = "NodesSelected"
	ReasonNoNodesSelected     = "NoNodesSelected"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonProvisioningFailed  = "ProvisioningFailed"
	ReasonUnsupported         = "UnsupportedByBackend"
	ReasonAllSupported        = "AllSettingsCarriedOut"
	ReasonProvisioning        = "Provisioning"
	ReasonInUse               = "InUse"
	ReasonSessionsRefused     = "SessionsRefused"
	ReasonNodesLeaving        = "NodesLeaving"
	// ReasonApplyFailed: the API server refused a write of the object's plan (a NodeAnnouncement, a stack object).
	ReasonApplyFailed = "ApplyFailed"
	ReasonUnused      = "Unused"
)
