-- HealthPolicy: Healthy once the manager has seen it (it is valid by the time the API server accepts it).
if stale(obj) then
  return health("Progressing", "Waiting for the manager to observe generation " .. tostring(obj.metadata.generation))
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  return health("Healthy", ready.message)
end
if ready ~= nil then
  return health("Degraded", ready.message)
end
return health("Progressing", "Waiting for the manager")
