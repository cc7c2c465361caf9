/* Langfuse JS SDK (v4+, OpenTelemetry based): `LangfuseSpanProcessor` (`@langfuse/otel`) with the
OpenAI wrapper `observeOpenAI` (`@langfuse/openai`).

How user, session and properties are attached: inside `startActiveObservation(...)`
(`@langfuse/tracing`), `propagateAttributes({userId, sessionId, metadata: {...}}, fn)`
(https://langfuse.com/docs/observability/sdk/typescript/instrumentation,
https://langfuse.com/integrations/model-providers/openai-js). The Langfuse base URL is the runner's
OTLP endpoint (the processor posts to `/api/public/otel/v1/traces`). The openai `user` parameter is
passed as well.
*/
import { need, openaiCall, openaiClient, OTLP_ENDPOINT, otelProvider, run, shutdown } from './common.mjs';

const { LangfuseSpanProcessor } = need('@langfuse/otel');
const processor = new LangfuseSpanProcessor({
  publicKey: 'pk-lf-conformance',
  secretKey: 'sk-lf-conformance',
  baseUrl: OTLP_ENDPOINT,
  environment: 'conformance',
});
const provider = otelProvider([processor]);
const { propagateAttributes, startActiveObservation } = need('@langfuse/tracing');
const { observeOpenAI } = need('@langfuse/openai');
const client = openaiClient(observeOpenAI);

function attach(call, fn) {
  if (!call.user) return fn();
  return propagateAttributes(
    { userId: call.user, sessionId: call.session, metadata: call.properties }, fn,
  );
}

const root = (call, fn) => startActiveObservation(`handle call ${call.n}`, () => fn());
await run((call) => openaiCall(client, call), attach, { root });
await shutdown(provider);
