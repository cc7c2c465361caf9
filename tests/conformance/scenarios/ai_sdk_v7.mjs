/* Vercel AI SDK 7 (`ai` 7.x, `@ai-sdk/openai` 4.x) with `@ai-sdk/otel`, its OpenTelemetry integration.

How user, session and properties are attached (https://ai-sdk.dev/docs/ai-sdk-core/telemetry,
"Telemetry Metadata", "Runtime context telemetry inclusion"): `registerTelemetry(new
OpenTelemetry({runtimeContext: true}))` once; each call passes `runtimeContext: {userId, sessionId,
plan, feature}` and `telemetry: {functionId, includeRuntimeContext: {userId: true, ...}}` (v7 has no
`experimental_telemetry.metadata`), which the SDK writes as `ai.settings.context.<key>` on the
call's root span. The openai `user` parameter is passed as `providerOptions: {openai: {user}}`.
Models: `openai(model)` (the default: the Responses API) and `openai.embedding(model)`.
*/
import { aiSdkCall, aiSdkOpenAI, need, otelProvider, run, shutdown } from './common.mjs';

const provider = otelProvider();
const ai = need('ai');
const { OpenTelemetry } = need('@ai-sdk/otel');
ai.registerTelemetry(new OpenTelemetry({ runtimeContext: true }));
const openai = aiSdkOpenAI();

function options(call) {
  const context = call.user ? { userId: call.user, sessionId: call.session, ...call.properties } : {};
  const include = Object.fromEntries(['userId', 'sessionId', 'plan', 'feature'].map((k) => [k, true]));
  return {
    runtimeContext: context,
    telemetry: { functionId: `call-${call.kind}`, includeRuntimeContext: include },
    providerOptions: call.user ? { openai: { user: call.user } } : undefined,
  };
}

await run((call) => aiSdkCall(ai, openai, call, options(call)), (call, fn) => fn());
await shutdown(provider);
