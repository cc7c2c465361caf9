/* OpenInference JS: `@arizeai/openinference-instrumentation-openai`.

How user, session and properties are attached: the context setters of `@arizeai/openinference-core`
(https://arize-ai.github.io/openinference/js/packages/openinference-core/, "Context Attribute
Propagation"): `context.with(setMetadata(setUser(setSession(ctx, {sessionId}), {userId}), {plan,
feature}), fn)`, which the instrumentation writes as `user.id`, `session.id` and the JSON `metadata`.
The openai `user` parameter is passed as well.
*/
import { need, openaiCall, openaiClient, otelProvider, run, shutdown } from './common.mjs';

const provider = otelProvider();
const { registerInstrumentations } = need('@opentelemetry/instrumentation');
const { OpenAIInstrumentation } = need('@arizeai/openinference-instrumentation-openai');
const instrumentation = new OpenAIInstrumentation();
registerInstrumentations({ instrumentations: [instrumentation], tracerProvider: provider });
const api = need('@opentelemetry/api');
const { setMetadata, setSession, setUser } = need('@arizeai/openinference-core');
const client = openaiClient();

function attach(call, fn) {
  if (!call.user) return fn();
  const session = setSession(api.context.active(), { sessionId: call.session });
  const ctx = setMetadata(setUser(session, { userId: call.user }), call.properties);
  return api.context.with(ctx, fn);
}

await run((call) => openaiCall(client, call), attach);
await shutdown(provider);
