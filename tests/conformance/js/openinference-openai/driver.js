// @arizeai/openinference-instrumentation-openai; user/session/metadata via @arizeai/openinference-core context setters:
// context.with(setMetadata(setUser(setSession(ctx, {sessionId}), {userId}), {plan, feature}), fn)
// https://arize-ai.github.io/openinference/js/packages/openinference-core/ (README "Context Attribute Propagation")
'use strict';
const C = require('/work/i15-js/tools/common.js');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { OpenAIInstrumentation } = require('@arizeai/openinference-instrumentation-openai');
const provider = C.setupTracing('openinference-openai');
const instr = new OpenAIInstrumentation();
registerInstrumentations({ instrumentations: [instr], tracerProvider: provider });
const openaiMod = require('openai');
instr.manuallyInstrument && instr.manuallyInstrument(openaiMod);
const { OpenAI } = openaiMod;
const api = require('@opentelemetry/api');
const { setSession, setUser, setMetadata } = require('@arizeai/openinference-core');
const client = new OpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test', maxRetries: 0 });

async function call(c) {
  const w = c.who;
  if (!w.user) return C.openaiCall(client, c);
  const ctx = setMetadata(setUser(setSession(api.context.active(), { sessionId: w.session }), { userId: w.user }), { plan: w.plan, feature: w.feature });
  return api.context.with(ctx, () => C.openaiCall(client, c));
}

(async () => {
  await C.runScenario('openinference-openai', call);
  await provider.forceFlush();
  await provider.shutdown();
})();
