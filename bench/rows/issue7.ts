/** Rows of issue 7 (`issues show 7`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";
import { initialJsRow } from "./issue7/initialJs.js";
import { lcpRow } from "./issue7/lcp.js";
import { firstTokenRow } from "./issue7/firstToken.js";

export const ISSUE7_ROWS: readonly BenchRow[] = [initialJsRow, lcpRow, firstTokenRow];
