/** Rows of issue 6 (`issues show 6`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";

export const ISSUE6_ROWS: readonly BenchRow[] = [];
