-- NodeAnnouncement: Suspended while the node is drained; Progressing until its agent acts on the current plan;
-- Healthy when the agent runs.
if obj.spec ~= nil and obj.spec.drain == true then
  return health("Suspended", "Drained: the node's prefixes are deprefered, then withdrawn")
end
return fromConditions(obj, "the node's agent")
