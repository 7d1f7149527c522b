// Shows the exact bytes a server streams on /subscribe for messages with line breaks, so the
// gateway's framing can be compared with real Upstash's (run it against both):
//   UPSTASH_REDIS_REST_URL=… UPSTASH_REDIS_REST_TOKEN=… node sse-probe.mjs
// Prints the raw stream as a JSON string (every \n, \r visible) and exits. Not part of
// `cargo xtask conformance`: it asserts nothing, it records.
const url = process.env.UPSTASH_REDIS_REST_URL;
const token = process.env.UPSTASH_REDIS_REST_TOKEN;
if (!url || !token) {
  console.error("set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN");
  process.exit(2);
}
const channel = `sse-probe:${Date.now()}`;
const auth = { Authorization: `Bearer ${token}` };
const controller = new AbortController();
const response = await fetch(`${url}/subscribe/${encodeURIComponent(channel)}`, {
  method: "POST",
  headers: { ...auth, Accept: "text/event-stream" },
  body: "[]",
  signal: controller.signal,
});
console.log(`status ${response.status}, content-type ${response.headers.get("content-type")}`);
const reader = response.body.getReader();
const decoder = new TextDecoder();
let raw = "";
const read = async (until) => {
  while (!raw.includes(until)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended; got ${JSON.stringify(raw)}`);
    raw += decoder.decode(value, { stream: true });
  }
};
const timer = setTimeout(() => {
  console.log(JSON.stringify(raw));
  console.error("timed out after 10 s");
  process.exit(1);
}, 10_000);
await read("subscribe,");
for (const message of ["lf:a\nb", "crlf:a\r\nb", "cr:a\rb", "blank:a\n\nb", "end-of-probe"]) {
  const published = await fetch(url, {
    method: "POST",
    headers: { ...auth, "Content-Type": "application/json" },
    body: JSON.stringify(["PUBLISH", channel, message]),
  });
  if (!published.ok) throw new Error(`PUBLISH: ${published.status} ${await published.text()}`);
}
await read("end-of-probe");
clearTimeout(timer);
console.log(JSON.stringify(raw));
controller.abort();
process.exit(0);
