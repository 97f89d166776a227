/** Rows of issue 5 (`issues show 5`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";

export const ISSUE5_ROWS: readonly BenchRow[] = [];
