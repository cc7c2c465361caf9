// @opentelemetry/instrumentation-openai (opentelemetry-js-contrib). It documents no way to attach an end user:
// like the Python contrib capture, the application's parent span `handle_request` carries
// user.id, session.id, gen_ai.conversation.id, property.plan, property.feature (semconv-style, app-chosen).
'use strict';
const C = require('/work/i15-js/tools/common.js');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { OpenAIInstrumentation } = require('@opentelemetry/instrumentation-openai');
const provider = C.setupTracing('otel-instrumentation-openai');
registerInstrumentations({ instrumentations: [new OpenAIInstrumentation()], tracerProvider: provider });
const { OpenAI } = require('openai');
const api = require('@opentelemetry/api');
const client = new OpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test', maxRetries: 0 });
const tracer = api.trace.getTracer('capture.app', '1.0.0');

async function call(c) {
  const w = c.who;
  const attrs = w.user ? { 'user.id': w.user, 'session.id': w.session, 'gen_ai.conversation.id': w.session, 'property.plan': w.plan, 'property.feature': w.feature } : {};
  return tracer.startActiveSpan('handle_request', { attributes: attrs }, async (span) => {
    try { return await C.openaiCall(client, c); } finally { span.end(); }
  });
}

(async () => {
  await C.runScenario('otel-instrumentation-openai', call);
  await provider.forceFlush();
  await provider.shutdown();
})();
