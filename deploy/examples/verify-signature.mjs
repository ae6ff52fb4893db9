// Checks a processor call's Processor-Signature in a Next.js route handler (App Router), or
// anywhere else with Node's crypto. Read the body as text first: the signature covers the
// exact bytes, not a re-serialised object, and also the method, the URL path the call was
// sent to and its Processor-Delivery id, so a call meant for one route cannot be replayed to
// another.
import crypto from "node:crypto";

export function verifyProcessorSignature(
  { header, delivery, method = "POST", path, body },
  secret,
  toleranceSeconds = 300,
) {
  if (typeof header !== "string" || header.length > 2048) return false;
  if (typeof delivery !== "string" || !/^[0-9a-f]{32}$/.test(delivery)) return false;
  const fields = header.split(",").map((part) => part.trim().split("="));
  const t = fields.find(([name, value]) => name === "t" && /^[0-9]{1,12}$/.test(value))?.[1];
  const given = fields
    .filter(([name, value]) => name === "v2" && /^[0-9a-f]{64}$/.test(value))
    .map(([, value]) => value);
  if (t === undefined || Math.abs(Date.now() / 1000 - Number(t)) > toleranceSeconds) return false;
  const expected = crypto
    .createHmac("sha256", secret)
    .update(`${t}\n${method.toUpperCase()}\n${path}\n${delivery}\n`)
    .update(body)
    .digest("hex");
  return given.some((value) => crypto.timingSafeEqual(Buffer.from(value), Buffer.from(expected)));
}

// A handler that also remembers delivery ids for the tolerance window refuses every replay.
const seen = new Map(); // delivery id -> when it was seen (one process; use a table for many)

// app/api/jobs/thumbnail/route.js
export async function POST(request) {
  const body = await request.text();
  const call = {
    header: request.headers.get("processor-signature"),
    delivery: request.headers.get("processor-delivery"),
    method: request.method,
    path: new URL(request.url).pathname,
    body,
  };
  if (!verifyProcessorSignature(call, process.env.PROCESSOR_SIGNING_SECRET)) {
    return Response.json({ error: "bad or missing Processor-Signature" }, { status: 401 });
  }
  if (seen.has(call.delivery)) {
    return Response.json({ error: "this delivery was already received" }, { status: 409 });
  }
  seen.set(call.delivery, Date.now());
  const { job_id, attempt, payload } = JSON.parse(body);
  // … do the work, idempotently per job_id + attempt …
  return Response.json({ result: { job_id, attempt, thumbnail: `${payload.image}.thumb.png` } });
}
