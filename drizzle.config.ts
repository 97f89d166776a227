import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./shared/schema.ts",
  out: "./migrations",
  schemaFilter: ["public"],
  // Only `generate` is used; migrations are applied by the server (server/db/migrate.ts).
});
