// Sends audit events to a running tierlog through the OpenTelemetry JS SDK and its
// OTLP/HTTP log exporter, which speaks OTLP's JSON encoding.
//
// Environment: TIERLOG_URL (base URL), TIERLOG_KEY (an events.write key), RUN (a tag
// put in every record).
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';

const url = process.env.TIERLOG_URL.replace(/\/$/, '');
const run = process.env.RUN;
const exporter = new OTLPLogExporter({
  url: `${url}/v1/logs`,
  headers: { Authorization: `Bearer ${process.env.TIERLOG_KEY}` },
});
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'web-shop', 'tenant.id': 'otel-js' }),
  processors: [new BatchLogRecordProcessor({ exporter })],
});
const logger = provider.getLogger('shop.audit');

logger.emit({
  severityNumber: SeverityNumber.WARN,
  severityText: 'WARN',
  body: 'account locked after 5 failures',
  attributes: {
    category: 'auth',
    action: 'auth.account_locked',
    status: 'failure',
    'enduser.id': 'carol',
    'client.address': '192.0.2.44',
    'details.run': run,
    'details.failures': 5,
  },
});
// A map body: its entries count as attributes.
logger.emit({
  severityNumber: SeverityNumber.INFO,
  body: { category: 'audit', action: 'invoice.deleted', message: 'invoice deleted', resource: 'invoice', resource_id: 'inv-7' },
  attributes: { user_id: 'dave', 'changes.before.status': 'draft', 'details.run': run },
});
// Not a category tierlog knows: refused through partial success.
logger.emit({ severityNumber: SeverityNumber.INFO, body: 'bad', attributes: { category: 'nonsense', 'details.run': run } });

await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ sent: 3 }));
