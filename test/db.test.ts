import { describe, it, expect, afterAll, vi } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { pendingMigrations, runMigrations } from "../server/db/migrate.js";
import { pino } from "pino";
import path from "node:path";
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
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
