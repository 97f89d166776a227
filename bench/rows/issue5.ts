/** Rows of issue 5 (`issues show 5`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";
import { chunkToStoredRow } from "./issue5/chunkToStored.js";
import { budgetCostRow } from "./issue5/budgetCost.js";

export const ISSUE5_ROWS: readonly BenchRow[] = [chunkToStoredRow, budgetCostRow];
