// @traceloop/node-server-sdk on the plain openai client.
// User/session/properties: traceloop.withAssociationProperties({user_id, session_id, plan, feature}, fn)
// https://www.traceloop.com/docs/openllmetry/tracing/association (AssociationProperty.USER_ID = "user_id", SESSION_ID = "session_id")
'use strict';
const C = require('/work/i15-js/tools/common.js');
const traceloop = require('@traceloop/node-server-sdk');
const { OpenAI } = require('openai');
traceloop.initialize({
  appName: 'capture-traceloop-openai',
  baseUrl: `http://127.0.0.1:${process.env.RECORDER_PORT}`,
  apiKey: 'test',
  disableBatch: false,
  traceloopSyncEnabled: false,
  silenceInitializationMessage: true,
  instrumentModules: { openAI: OpenAI },
  resourceAttributes: { 'deployment.environment.name': 'capture' },
});
const client = new OpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test', maxRetries: 0 });

async function raw(c) {
  const user = c.who.user ? { user: c.who.user } : {};
  if (c.kind === 'embed') {
    const r = await client.embeddings.create({ model: c.model, input: c.input, ...user });
    return { prompt_tokens: r.usage.prompt_tokens };
  }
  const messages = [{ role: 'system', content: C.SYSTEM }, ...c.messages];
  if (c.kind.startsWith('stream')) {
    const extra = c.kind === 'stream' ? { stream_options: { include_usage: true } } : {};
    const s = await client.chat.completions.create({ model: c.model, messages, stream: true, ...extra, ...user });
    let text = '', usage = null;
    for await (const ch of s) { if (ch.choices[0]) text += ch.choices[0].delta.content || ''; if (ch.usage) usage = ch.usage; }
    return { text, prompt_tokens: usage && usage.prompt_tokens, completion_tokens: usage && usage.completion_tokens };
  }
  const r = await client.chat.completions.create({ model: c.model, messages, ...user });
  return { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens, response_id: r.id };
}

async function call(c) {
  if (!c.who.user) return raw(c);
  const props = { [traceloop.AssociationProperty.USER_ID]: c.who.user, [traceloop.AssociationProperty.SESSION_ID]: c.who.session, plan: c.who.plan, feature: c.who.feature };
  return traceloop.withAssociationProperties(props, () => raw(c));
}

(async () => {
  await C.runScenario('traceloop-openai', call);
  await traceloop.forceFlush();
})();
