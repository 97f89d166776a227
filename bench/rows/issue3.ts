/** Rows of issue 3 (`issues show 3`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";

export const ISSUE3_ROWS: readonly BenchRow[] = [];
