"""Alert sinks: services that consume the decisions/alerts topics off the scorer's hot path."""
