// TAMS timestamps in the browser: integer nanoseconds as BigInt, never floats.

export const NS = 1000000000n;

// "10:500000000" (or "-1:0") as BigInt nanoseconds.
export function parseTimestamp(text) {
  const m = /^(-?)(\d+):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`not a TAMS timestamp: ${text}`);
  const value = BigInt(m[2]) * NS + BigInt(m[3]);
  return m[1] ? -value : value;
}

export function formatTimestamp(ns) {
  const negative = ns < 0n;
  const a = negative ? -ns : ns;
  return `${negative ? "-" : ""}${a / NS}:${a % NS}`;
}

// "[0:0_10:0)" as {start, end} (BigInt or null for an open end), half-open.
export function parseTimerange(text) {
  if (!text || text === "()") return null;
  const m = /^([[(])?([^_\])]*)(?:_([^\])]*))?([\])])?$/.exec(text.trim());
  if (!m) return null;
  let start = m[2] ? parseTimestamp(m[2]) : null;
  let end = m[3] !== undefined ? (m[3] ? parseTimestamp(m[3]) : null) : start;
  if (start !== null && m[1] === "(") start += 1n;
  if (end !== null && (m[4] === "]" || m[3] === undefined)) end += 1n;
  return { start, end };
}

export function formatTimerange(start, end) {
  return `[${start === null ? "" : formatTimestamp(start)}_${end === null ? "" : formatTimestamp(end)})`;
}

// A readable time: seconds with milliseconds, or a UTC date-time for wall-clock timelines
// (TAI: less the 37 leap seconds of today; the server does exact conversions for playlists).
const WALL_CLOCK_FROM = (946684800n + 32n) * NS;
export function describe(ns) {
  if (ns >= WALL_CLOCK_FROM) {
    const ms = Number((ns - 37n * NS) / 1000000n);
    return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
  }
  const negative = ns < 0n;
  const a = negative ? -ns : ns;
  const seconds = a / NS;
  const millis = (a % NS) / 1000000n;
  const h = seconds / 3600n, m = (seconds / 60n) % 60n, s = seconds % 60n;
  const two = (v) => v.toString().padStart(2, "0");
  return `${negative ? "-" : ""}${h}:${two(m)}:${two(s)}.${millis.toString().padStart(3, "0")}`;
}

export function durationText(ns) {
  const s = Number(ns) / 1e9;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
