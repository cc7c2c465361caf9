/* Vercel AI SDK 6 (`ai` 6.x, `@ai-sdk/openai` 3.x) with its built-in OpenTelemetry spans.

How user, session and properties are attached: `experimental_telemetry: {isEnabled: true,
functionId, metadata: {userId, sessionId, plan, feature}}` on each call
(https://ai-sdk.dev/v6/docs/ai-sdk-core/telemetry), which the SDK writes as
`ai.telemetry.metadata.<key>` on its spans. The openai `user` parameter is passed as
`providerOptions: {openai: {user}}`. Models: `openai(model)` (the default: the Responses API) and
`openai.embedding(model)`; the application registers the OpenTelemetry SDK itself.
*/
import { aiSdkCall, aiSdkOpenAI, aiSdkV6Options, need, otelProvider, run, shutdown } from './common.mjs';

const provider = otelProvider();
const ai = need('ai');
const openai = aiSdkOpenAI();

await run((call) => aiSdkCall(ai, openai, call, aiSdkV6Options(call)), (call, fn) => fn());
await shutdown(provider);
