-- BGPSessionClaim: Progressing until observed or while sessions are provisioned; Degraded when stalled (a missing
-- Secret, failed provisioning) or when it selects no node; Healthy when ready.
if stale(obj) then
  return health("Progressing", "Waiting for the manager to observe generation " .. tostring(obj.metadata.generation))
end
local stalled = condition(obj, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return health("Degraded", stalled.message)
end
local reconciling = condition(obj, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return health("Progressing", reconciling.message)
end
local ready = condition(obj, "Ready")
if ready == nil then
  return health("Progressing", "Waiting for the manager")
end
if ready.status == "True" then
  return health("Healthy", ready.message)
end
return health("Degraded", ready.message)
