-- AnycastPrefix: Suspended while paused; Progressing until the manager has acted on the spec or while agents report;
-- Degraded when stalled (a conflict, a missing reference) or announced from no node; Healthy when announced.
if obj.spec ~= nil and obj.spec.paused == true then
  return health("Suspended", "Paused: the prefix keeps what it announced and acts on nothing new")
end
return fromConditions(obj, "the manager")
