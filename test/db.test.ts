import { describe, it, expect, afterAll, vi } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { pendingMigrations, runMigrations } from "../server/db/migrate.js";
import { pino } from "pino";
import path from "node:path";
import { readFileSync, mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import os from "node:os";
import { clientConfigFromUrl } from "../server/db/pool.js";
import { ROOT } from "./helpers/paths.js";

const dbs: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(dbs.map((d) => d.drop()));
});

describe("migrations", () => {
  it("reports pending migrations on an empty database, none after applying", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const folder = path.join(ROOT, "migrations");
    expect(await pendingMigrations(db.pool, folder)).toMatch(/migrations pending/);
    await runMigrations(db.pool, folder, pino({ level: "silent" }));
    expect(await pendingMigrations(db.pool, folder)).toBeNull();
    const t = await db.pool.query("select to_regclass('public.runs') as t");
    expect(t.rows[0].t).toBe("runs");
  });

  it("applies once when many instances migrate at the same time (advisory lock)", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const folder = path.join(ROOT, "migrations");
    await Promise.all(Array.from({ length: 4 }, () => runMigrations(db.pool, folder, pino({ level: "silent" }))));
    const r = await db.pool.query("select count(*)::int as n from drizzle.__drizzle_migrations");
    const journal = JSON.parse(readFileSync(path.join(folder, "meta", "_journal.json"), "utf8")) as { entries: unknown[] };
    expect(r.rows[0].n).toBe(journal.entries.length);
  });
});

describe("migration 0001 (open runs, no user_id foreign keys)", () => {
  it("keeps every row a database of 0000 holds, and gives a run that ended without finished_at its last update's time", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const log = pino({ level: "silent" });
    // The migrations folder as it was with 0000 alone.
    const only0000 = mkdtempSync(path.join(os.tmpdir(), "esa-migr-"));
    try {
      const folder = path.join(ROOT, "migrations");
      const journal = JSON.parse(readFileSync(path.join(folder, "meta", "_journal.json"), "utf8")) as { entries: { tag: string }[] };
      mkdirSync(path.join(only0000, "meta"));
      writeFileSync(path.join(only0000, "meta", "_journal.json"), JSON.stringify({ ...journal, entries: journal.entries.slice(0, 1) }));
      writeFileSync(path.join(only0000, "0000_init.sql"), readFileSync(path.join(folder, "0000_init.sql")));
      await runMigrations(db.pool, only0000, log);

      const q = (sql: string, args: unknown[] = []) => db.pool.query(sql, args);
      const user = (await q("insert into users default values returning id")).rows[0].id as string;
      const conv = (await q("insert into conversations (user_id, title) values ($1, 'old') returning id", [user])).rows[0].id as string;
      const statuses = ["queued", "running", "succeeded", "failed", "cancelled"];
      for (const status of statuses) {
        const m = (await q("insert into messages (conversation_id, user_id, role, content) values ($1, $2, 'user', $3) returning id", [conv, user, status])).rows[0].id;
        const open = status === "queued" || status === "running";
        // The failed one ended without finished_at (no code writes that; the migration must still take it).
        const finished = open || status === "failed" ? "null" : "now()";
        const run = (
          await q(
            `insert into runs (user_id, conversation_id, message_id, status, finished_at, updated_at)
             values ($1, $2, $3, $4, ${finished}, '2026-01-02T03:04:05Z') returning id`,
            [user, conv, m, status],
          )
        ).rows[0].id;
        if (status === "succeeded") await q("insert into messages (conversation_id, user_id, role, content, run_id) values ($1, $2, 'assistant', 'answer', $3)", [conv, user, run]);
      }
      const before = (await q("select id, status, finished_at is null as open from runs order by status")).rows;

      await runMigrations(db.pool, folder, log);
      expect(await pendingMigrations(db.pool, folder)).toBeNull();
      const after = (await q("select id, status, finished_at is null as open from runs order by status")).rows;
      expect(after.map((r) => [r.id, r.status])).toEqual(before.map((r) => [r.id, r.status]));
      expect(Object.fromEntries(after.map((r) => [r.status, r.open]))).toEqual({ queued: true, running: true, succeeded: false, failed: false, cancelled: false });
      const failed = (await q("select finished_at from runs where status = 'failed'")).rows[0];
      expect((failed.finished_at as Date).toISOString()).toBe("2026-01-02T03:04:05.000Z");
      expect((await q("select count(*)::int as n from messages")).rows[0].n).toBe(statuses.length + 1);
      const fks = (await q("select conname from pg_constraint where contype = 'f' and conname like '%user_id_users_id_fk' order by conname")).rows;
      expect(fks.map((r) => r.conname)).toEqual(["conversations_user_id_users_id_fk"]);
      const idx = (await q("select indexname from pg_indexes where tablename = 'runs' order by indexname")).rows.map((r) => r.indexname);
      expect(idx).toEqual(["runs_conversation_idx", "runs_open_idx", "runs_pkey", "runs_user_idx"]);
      // The queue's counts can read the open-runs index (on a table this small the planner would rather scan it).
      const client = await db.pool.connect();
      try {
        await client.query("set enable_seqscan = off");
        const plan = (await client.query("explain select count(*) from runs where finished_at is null and status = 'queued'")).rows;
        expect(plan.map((r) => r["QUERY PLAN"]).join("\n")).toMatch(/runs_open_idx/);
      } finally {
        client.release(true);
      }
    } finally {
      rmSync(only0000, { recursive: true, force: true });
    }
  });
});

describe("clientConfigFromUrl: sslmode with its libpq meaning", () => {
  const base = "postgres://u:p@db.example.com:5432/app";
  const ssl = (query: string) => clientConfigFromUrl(`${base}?${query}`).ssl;
  const caDir = mkdtempSync(path.join(os.tmpdir(), "esa-ca-"));
  const caFile = path.join(caDir, "root.crt");
  writeFileSync(caFile, "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n");
  afterAll(() => rmSync(caDir, { recursive: true, force: true }));

  it("keeps host, port, database and credentials", () => {
    expect(clientConfigFromUrl(`${base}?sslmode=require`)).toMatchObject({
      host: "db.example.com",
      port: 5432,
      database: "app",
      user: "u",
      password: "p",
    });
  });

  it("disable and allow: plaintext", () => {
    expect(ssl("sslmode=disable")).toBe(false);
    // libpq tries plaintext first; pg cannot fall back, so plaintext is its only attempt.
    expect(ssl("sslmode=allow")).toBe(false);
  });

  it("prefer and require: encrypted, certificate not checked", () => {
    expect(ssl("sslmode=prefer")).toEqual({ rejectUnauthorized: false });
    expect(ssl("sslmode=require")).toEqual({ rejectUnauthorized: false });
  });

  it("require with sslrootcert: the chain is checked against the CA, as in libpq", () => {
    const s = ssl(`sslmode=require&sslrootcert=${encodeURIComponent(caFile)}`) as Record<string, unknown>;
    expect(s.rejectUnauthorized).not.toBe(false);
    expect(s.ca).toContain("BEGIN CERTIFICATE");
  });

  it("verify-ca: chain checked against sslrootcert, host name not; refused without a CA file", () => {
    const s = ssl(`sslmode=verify-ca&sslrootcert=${encodeURIComponent(caFile)}`) as Record<string, unknown>;
    expect(s.rejectUnauthorized).not.toBe(false);
    expect(s.ca).toContain("BEGIN CERTIFICATE");
    expect(typeof s.checkServerIdentity).toBe("function");
    expect((s.checkServerIdentity as () => unknown)()).toBeUndefined();
    expect(() => ssl("sslmode=verify-ca")).toThrow(/verify-ca needs sslrootcert/);
  });

  it("verify-full: chain and host name checked (node's defaults)", () => {
    const s = ssl("sslmode=verify-full") as Record<string, unknown>;
    expect(s).toEqual({});
  });

  it("no sslmode: left to pg's default; an unknown sslmode is refused as libpq does", () => {
    expect(clientConfigFromUrl(base).ssl).toBeUndefined();
    expect(() => ssl("sslmode=requre")).toThrow(/invalid sslmode "requre"/);
  });

  it("never emits pg's sslmode deprecation warning", () => {
    const warn = vi.spyOn(process, "emitWarning");
    try {
      for (const mode of ["prefer", "require", "verify-full", "disable", "allow", "no-verify"]) ssl(`sslmode=${mode}`);
      ssl(`sslmode=verify-ca&sslrootcert=${encodeURIComponent(caFile)}`);
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });
});
