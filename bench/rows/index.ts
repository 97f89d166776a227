/**
 * Every bench row, in the order they run and print. A later issue adds its
 * rows by adding a module here (see ../lib/types.ts for the contract).
 */
import type { BenchRow } from "../lib/types.js";
import { liveRow } from "./live.js";
import { apiMetaRow } from "./apiMeta.js";
import { spawnLiveRow } from "./spawnLive.js";
import { spawnReadyRow } from "./spawnReady.js";
import { idleRssRow } from "./idleRss.js";
import { ISSUE3_ROWS } from "./issue3.js";
import { ISSUE4_ROWS } from "./issue4.js";
import { ISSUE5_ROWS } from "./issue5.js";
import { ISSUE6_ROWS } from "./issue6.js";
import { ISSUE7_ROWS } from "./issue7.js";

export const ROWS: readonly BenchRow[] = [
  // issue 2: the runtime
  liveRow,
  apiMetaRow,
  spawnLiveRow,
  spawnReadyRow,
  idleRssRow,
  ...ISSUE3_ROWS,
  ...ISSUE4_ROWS,
  ...ISSUE5_ROWS,
  ...ISSUE6_ROWS,
  ...ISSUE7_ROWS,
];
