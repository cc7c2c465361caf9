/* OpenLLMetry JS (`@traceloop/node-server-sdk`) with its OpenAI instrumentation.

How user, session and properties are attached: `traceloop.withAssociationProperties({user_id,
session_id, plan, feature}, fn)` (https://www.traceloop.com/docs/openllmetry/tracing/association;
`AssociationProperty.USER_ID` is "user_id", `SESSION_ID` "session_id"), which writes
`traceloop.association.properties.<key>` on the spans made inside. The openai `user` parameter is
passed as well. The openai module is handed to `initialize({instrumentModules: {openAI}})`, as the
SDK documents for ES-module applications.
*/
import { need, openaiCall, openaiClient, run, traceloopInit } from './common.mjs';

const traceloop = traceloopInit({ instrumentModules: { openAI: need('openai').OpenAI } });
const client = openaiClient();

function attach(call, fn) {
  if (!call.user) return fn();
  const { USER_ID, SESSION_ID } = traceloop.AssociationProperty;
  const props = { [USER_ID]: call.user, [SESSION_ID]: call.session, ...call.properties };
  return traceloop.withAssociationProperties(props, fn);
}

await run((call) => openaiCall(client, call), attach);
await traceloop.forceFlush();
