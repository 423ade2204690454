-- Argo CD health of a StatefulApp (statefulapp.io/v1alpha1), from what the
-- operator writes: status.observedGeneration and the conditions Stalled,
-- Degraded, Reconciling and Ready. Uses only Lua's base library, so it runs
-- from argocd-cm without useOpenLibs.
local health = {}
local status = obj.status
local generation = obj.metadata.generation

-- The operator has not seen the latest spec yet: nothing below is current.
if status == nil or (generation ~= nil and status.observedGeneration ~= generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return health
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end
local function isTrue(conditionType)
  return conditions[conditionType] ~= nil and conditions[conditionType].status == "True"
end
local function explain(conditionType)
  local condition = conditions[conditionType]
  return condition.reason .. ": " .. condition.message
end

-- Stalled: only a person can help. Degraded: something is wrong even if the
-- operator is working on it (a lost node being replaced, a failed reconcile).
if isTrue("Stalled") then
  health.status = "Degraded"
  health.message = explain("Stalled")
  return health
end
if isTrue("Degraded") then
  health.status = "Degraded"
  health.message = explain("Degraded")
  return health
end
if isTrue("Reconciling") then
  health.status = "Progressing"
  health.message = explain("Reconciling")
  return health
end

-- Stopped on purpose (instances: 0): the instances are kept with their data.
local running = status.running or 0
if obj.spec.instances == 0 and running == 0 then
  health.status = "Suspended"
  health.message = "Stopped: 0 instances asked, " .. tostring(status.stopped or 0) .. " kept with their data"
  return health
end

if isTrue("Ready") then
  health.status = "Healthy"
  health.message = conditions["Ready"].message
  return health
end
health.status = "Progressing"
if conditions["Ready"] ~= nil then
  health.message = conditions["Ready"].message
else
  health.message = "Waiting for the operator's conditions"
end
return health
