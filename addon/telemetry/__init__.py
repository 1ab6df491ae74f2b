"""OpenTelemetry traces of the flows ([telemetry] in corral.toml): tracing.py is the addon,
attributes.py maps a flow to GenAI semantic-convention attributes, pipeline.py holds the SDK
(imported only when telemetry is on)."""
