/** Rows of issue 6 (`issues show 6`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";
import { fanoutRow } from "./issue6/fanout.js";
import { idleMemoryRow } from "./issue6/idleMemory.js";

export const ISSUE6_ROWS: readonly BenchRow[] = [fanoutRow, idleMemoryRow];
