// Checks a processor call's Processor-Signature in a Next.js route handler (App Router), or
// anywhere else with Node's crypto. Read the body as text first: the signature covers the
// exact bytes, not a re-serialised object.
import crypto from "node:crypto";

export function verifyProcessorSignature(header, body, secret, toleranceSeconds = 300) {
  const fields = (header ?? "").split(",").map((part) => part.trim().split("="));
  const t = Number(fields.find(([name]) => name === "t")?.[1]);
  const given = fields.filter(([name]) => name === "v1").map(([, value]) => value);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceSeconds) return false;
  const expected = crypto.createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
  return given.some(
    (value) =>
      value.length === expected.length &&
      crypto.timingSafeEqual(Buffer.from(value), Buffer.from(expected)),
  );
}

// app/api/jobs/thumbnail/route.js
export async function POST(request) {
  const body = await request.text();
  const header = request.headers.get("processor-signature");
  if (!verifyProcessorSignature(header, body, process.env.PROCESSOR_SIGNING_SECRET)) {
    return Response.json({ error: "bad or missing Processor-Signature" }, { status: 401 });
  }
  const { job_id, attempt, payload } = JSON.parse(body);
  // … do the work, idempotently per job_id + attempt …
  return Response.json({ result: { job_id, attempt, thumbnail: `${payload.image}.thumb.png` } });
}
