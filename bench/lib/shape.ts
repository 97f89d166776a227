import { get } from "./http.js";

/** The JSON key set of an answer, nested keys dotted. */
function keys(value: unknown, prefix = ""): string[] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [prefix];
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => keys(v, prefix ? `${prefix}.${k}` : k));
}

/** Both servers answer `path` with 200 and JSON of the same keys: a like-for-like comparison. */
export async function assertSameShape(portA: number, portB: number, path: string): Promise<void> {
  const [a, b] = await Promise.all([get(portA, path), get(portB, path)]);
  if (a.status !== 200 || b.status !== 200) throw new Error(`${path}: statuses ${a.status} and ${b.status}`);
  const ka = keys(JSON.parse(a.body)).sort().join(",");
  const kb = keys(JSON.parse(b.body)).sort().join(",");
  if (ka !== kb) throw new Error(`${path}: shapes differ: {${ka}} vs {${kb}}`);
}
