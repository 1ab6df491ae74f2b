"""OpenTelemetry traces of the flows ([telemetry] in corral.toml): tracing.py is the addon (on the
event loop: ids, sampling, a Record of each finished flow), context.py the W3C trace context,
attributes.py maps a Record to GenAI semantic-convention attributes, spans.py builds a flow's spans
in the export thread and encode.py writes them as OTLP protobuf; pipeline.py holds the SDK's batch
processor and exporters (imported only when telemetry is on)."""
