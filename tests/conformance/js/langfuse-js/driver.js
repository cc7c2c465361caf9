// Langfuse JS SDK v5 (OTel-based): LangfuseSpanProcessor (@langfuse/otel) + observeOpenAI (@langfuse/openai),
// user/session/metadata via propagateAttributes({userId, sessionId, metadata}) (@langfuse/tracing).
// https://langfuse.com/docs/observability/sdk/typescript/instrumentation ; https://langfuse.com/integrations/model-providers/openai-js
'use strict';
const C = require('/work/i15-js/tools/common.js');
const { LangfuseSpanProcessor } = require('@langfuse/otel');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const processor = new LangfuseSpanProcessor({ publicKey: 'pk-lf-test', secretKey: 'sk-lf-test', exporter: C.otlpExporter() });
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'capture-langfuse-js', 'deployment.environment.name': 'capture' }),
  spanProcessors: [processor],
});
provider.register();
const { propagateAttributes } = require('@langfuse/tracing');
const { observeOpenAI } = require('@langfuse/openai');
const { OpenAI } = require('openai');
const client = observeOpenAI(new OpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test', maxRetries: 0 }));

async function call(c) {
  const w = c.who;
  if (!w.user) return C.openaiCall(client, c);
  return propagateAttributes({ userId: w.user, sessionId: w.session, metadata: { plan: w.plan, feature: w.feature } },
    () => C.openaiCall(client, c));
}

(async () => {
  await C.runScenario('langfuse-js', call);
  await processor.forceFlush();
  await provider.shutdown();
})();
