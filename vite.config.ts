import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";
import { precompressPlugin } from "./scripts/vite-precompress.js";

// Absolute paths so the config works whatever the cwd (the server loads it by
// path when it runs Vite in middleware mode).
const root = fileURLToPath(new URL("./client", import.meta.url));
const outDir = fileURLToPath(new URL("./dist/public", import.meta.url));

export default defineConfig({
  root,
  plugins: [react(), precompressPlugin()],
  build: {
    outDir,
    // outDir lies outside root, where Vite will not empty it unless told to;
    // the server bundle in dist/ sits beside it and is left alone.
    emptyOutDir: true,
  },
});
