/** Rows of issue 3 (`issues show 3`, "Speed, in npm run bench"). */
import type { BenchRow } from "../lib/types.js";
import { postMessagesRow } from "./issue3/postMessages.js";
import { getMessagesRow } from "./issue3/getMessages.js";

export const ISSUE3_ROWS: readonly BenchRow[] = [postMessagesRow, getMessagesRow];
