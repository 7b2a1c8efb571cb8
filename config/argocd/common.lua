-- Shared by the four health checks (each file below starts with this text; `make manifests` assembles them).
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

local function stale(obj)
  if obj.status == nil or obj.status.observedGeneration == nil then
    return true
  end
  return obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation
end

local function health(status, message)
  return {status = status, message = message}
end
