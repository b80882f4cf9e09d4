-- Argo CD health check for mcp-operator.dev/MCPServer (Lua 5.1, as Argo CD runs it).
-- Install: the argocd-cm key in argocd-cm.yaml (kept identical to this file by a test).
--   Suspended    the operator confirmed a pause (annotation mcp-operator.dev/reconcile:
--                disabled -> Reconciled=False, reason Paused)
--   Progressing  the operator has not yet acted on this generation, or pods are coming up
--   Degraded     a reason that needs a human: the spec, a reference or the API server said no
--   Healthy      Ready=True for the current generation
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

-- Reasons that will not clear without someone changing something (docs: README, conditions).
local TERMINAL = { InvalidSpec = true, MissingReference = true, ApplyFailed = true }

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local ready = condition(obj.status.conditions, "Ready")
local reconciled = condition(obj.status.conditions, "Reconciled")

if reconciled ~= nil and reconciled.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(reconciled)
  return hs
end

-- Status written for an older spec says nothing about this one (not even a failure).
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if ready ~= nil and ready.observedGeneration ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and observed ~= generation then
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

for _, c in ipairs({ reconciled, ready }) do
  if c ~= nil and c.status == "False" and TERMINAL[c.reason] then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready ~= nil then
  hs.message = describe(ready)
end
return hs
