-- HealthPolicy: Healthy once the manager has seen it (it is valid by the time the API server accepts it).
return fromConditions(obj, "the manager")
