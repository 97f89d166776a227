/** Rows of issue 4 (`issues show 4`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";
import { startLatencyRow } from "./issue4/startLatency.js";
import { throughputRow } from "./issue4/throughput.js";

export const ISSUE4_ROWS: readonly BenchRow[] = [startLatencyRow, throughputRow];
