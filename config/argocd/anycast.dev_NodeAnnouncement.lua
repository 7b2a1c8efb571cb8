-- NodeAnnouncement: Suspended while the node is drained; Progressing until its agent acts on the current plan;
-- Healthy when the agent runs.
if obj.spec ~= nil and obj.spec.drain == true then
  return health("Suspended", "Drained: the node's prefixes are deprefered, then withdrawn")
end
if stale(obj) then
  return health("Progressing", "Waiting for the node's agent to act on generation " .. tostring(obj.metadata.generation))
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  return health("Healthy", ready.message)
end
if ready ~= nil then
  return health("Degraded", ready.message)
end
return health("Progressing", "Waiting for the node's agent")
