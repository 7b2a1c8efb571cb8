-- AnycastPrefix: Suspended while paused; Progressing until the manager has seen the spec or while agents report;
-- Degraded when stalled (a conflict, a missing reference) or announced from no node; Healthy when announced.
if obj.spec ~= nil and obj.spec.paused == true then
  return health("Suspended", "Paused: the prefix keeps what it announced and acts on nothing new")
end
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
