"""Sends audit events to a running tierlog through the OpenTelemetry Python SDK:
the standard `logging` module, the SDK's LoggingHandler and its OTLP/HTTP exporter
(protobuf), inside a span so that records carry trace context.

Environment: TIERLOG_URL (base URL), TIERLOG_KEY (an events.write key), RUN (a tag
put in every record), COMPRESSION (none or gzip). Prints one JSON line: the trace
and span ids the records were logged under, for the test to check.
"""

import json
import logging
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

url = os.environ["TIERLOG_URL"].rstrip("/")
run = os.environ["RUN"]
compression = Compression.Gzip if os.environ.get("COMPRESSION") == "gzip" else Compression.NoCompression

provider = LoggerProvider(resource=Resource.create({"service.name": "billing-portal", "tenant_id": "otel-tenant"}))
exporter = OTLPLogExporter(
    endpoint=f"{url}/v1/logs",
    headers={"Authorization": f"Bearer {os.environ['TIERLOG_KEY']}"},
    compression=compression,
)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
logger = logging.getLogger("app.audit")
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
logger.propagate = False

tracer = TracerProvider().get_tracer("otlp-test")
with tracer.start_as_current_span("login") as span:
    context = span.get_span_context()
    # Semantic-convention names for the user, the address and the agent.
    logger.warning(
        "invalid password",
        extra={
            "category": "auth",
            "action": "auth.login_failed",
            "status": "failure",
            "enduser.id": "alice",
            "client.address": "203.0.113.7",
            "user_agent.original": "python-requests/2.32",
            "details.run": run,
            "details.attempt": 3,
        },
    )
# Event field names, nested objects as dotted names.
logger.info(
    "role changed",
    extra={
        "category": "audit",
        "action": "user.role_changed",
        "user_id": "admin-1",
        "resource": "user",
        "resource_id": "bob",
        "changes.before.role": "member",
        "changes.after.role": "admin",
        "details.run": run,
    },
)
logger.info(
    "transfer executed",
    extra={
        "category": "financial",
        "action": "payment.transfer",
        "user_id": "alice",
        "financial.transaction_id": f"tx-{run}",
        "financial.amount": "1250.00",
        "financial.currency": "EUR",
        "details.run": run,
    },
)
logger.error(
    "rate limit exceeded",
    extra={
        "category": "security",
        "action": "security.rate_limited",
        "security.event_type": "rate_limited",
        "security.severity": "high",
        "client.address": "198.51.100.4",
        "details.run": run,
    },
)
# No category: tierlog refuses this record (partial success), the others stand.
logger.info("no category here", extra={"details.run": run})

provider.force_flush()
provider.shutdown()
print(json.dumps({"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}))
