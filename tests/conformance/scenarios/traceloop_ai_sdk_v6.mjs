/* OpenLLMetry JS (`@traceloop/node-server-sdk`) on the Vercel AI SDK 6: Traceloop's SDK sets up
OpenTelemetry and rewrites the AI SDK's spans (https://www.traceloop.com/docs/openllmetry/integrations/vercel-ai).

How user, session and properties are attached: as for the AI SDK alone, `experimental_telemetry:
{isEnabled: true, functionId, metadata: {userId, sessionId, plan, feature}}` on each call
(https://ai-sdk.dev/v6/docs/ai-sdk-core/telemetry); Traceloop turns the metadata into
`traceloop.association.properties.<key>`. The openai `user` parameter is passed as
`providerOptions: {openai: {user}}`. Models: `openai(model)` (the Responses API) and `openai.embedding(model)`.
*/
import { aiSdkCall, aiSdkOpenAI, aiSdkV6Options, need, run, traceloopInit } from './common.mjs';

const traceloop = traceloopInit();
const ai = need('ai');
const openai = aiSdkOpenAI();

await run((call) => aiSdkCall(ai, openai, call, aiSdkV6Options(call)), (call, fn) => fn());
await traceloop.forceFlush();
