-- BGPSessionClaim: Progressing until the manager has acted on the spec or while sessions are provisioned; Degraded
-- when stalled (a missing Secret, failed provisioning) or when it selects no node; Healthy when ready.
return fromConditions(obj, "the manager")
