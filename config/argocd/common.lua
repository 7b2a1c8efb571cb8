-- Shared by the four health checks (make manifests puts it in front of each of them in argocd-cm.yaml).
local function condition(obj, t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then
        return c
      end
    end
  end
  return nil
end

local function health(status, message)
  return {status = status, message = message}
end

-- fromConditions reads the conventions every kind follows: Progressing until `who` has acted on the current
-- generation or while Reconciling; Degraded when Stalled or not Ready; Healthy when Ready.
local function fromConditions(obj, who)
  local observed = obj.status ~= nil and obj.status.observedGeneration or nil
  if observed == nil or (obj.metadata.generation ~= nil and observed < obj.metadata.generation) then
    return health("Progressing", "Waiting for " .. who .. " to act on generation " .. tostring(obj.metadata.generation))
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
    return health("Progressing", "Waiting for " .. who)
  end
  if ready.status == "True" then
    return health("Healthy", ready.message)
  end
  return health("Degraded", ready.message)
end
