// AI SDK v7 + @ai-sdk/otel: registerTelemetry(new OpenTelemetry({runtimeContext: true})),
// per call runtimeContext {userId, sessionId, plan, feature} + telemetry.includeRuntimeContext.
// https://ai-sdk.dev/docs/ai-sdk-core/telemetry (node_modules/ai/docs/03-ai-sdk-core/60-telemetry.mdx,
// "Telemetry Metadata", "Runtime context telemetry inclusion", "Supplemental AI SDK attributes")
'use strict';
const C = require('/work/i15-js/tools/common.js');
const provider = C.setupTracing('ai-sdk-v7');
const { generateText, streamText, embed, registerTelemetry } = require('ai');
const { OpenTelemetry } = require('@ai-sdk/otel');
const { createOpenAI } = require('@ai-sdk/openai');
registerTelemetry(new OpenTelemetry({ runtimeContext: true }));
const openai = createOpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test' });

function opts(c) {
  const w = c.who;
  const ctx = w.user ? { userId: w.user, sessionId: w.session, plan: w.plan, feature: w.feature } : {};
  return {
    maxRetries: 0,
    runtimeContext: ctx,
    telemetry: { functionId: `call-${c.kind}`, includeRuntimeContext: { userId: true, sessionId: true, plan: true, feature: true } },
    providerOptions: w.user ? { openai: { user: w.user } } : undefined,
  };
}

async function call(c) {
  if (c.kind === 'embed') {
    const r = await embed({ model: openai.embedding(c.model), value: c.input, ...opts(c) });
    return { prompt_tokens: r.usage && r.usage.tokens };
  }
  const args = { model: openai.chat(c.model), system: C.SYSTEM, messages: c.messages, ...opts(c) };
  if (c.kind.startsWith('stream')) {
    let err;
    const r = streamText({ ...args, onError: ({ error }) => { err = error; } });
    let text = '';
    for await (const t of r.textStream) text += t;
    if (err) throw err;
    const usage = await r.usage;
    return { text, prompt_tokens: usage.inputTokens, completion_tokens: usage.outputTokens };
  }
  const r = await generateText(args);
  return { prompt_tokens: r.usage.inputTokens, completion_tokens: r.usage.outputTokens, response_id: r.response.id };
}

(async () => {
  await C.runScenario('ai-sdk-v7', call);
  await provider.forceFlush();
  await provider.shutdown();
})();
