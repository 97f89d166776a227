/** Rows of issue 4 (`issues show 4`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";

export const ISSUE4_ROWS: readonly BenchRow[] = [];
