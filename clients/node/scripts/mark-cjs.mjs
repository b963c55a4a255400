// Marks dist/cjs as CommonJS: this package is "type": "module", so without a
// nearer package.json saying otherwise Node would load dist/cjs/*.js (and
// TypeScript would read dist/cjs/*.d.ts) as ES modules.
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), JSON.stringify({ type: "commonjs" }) + "\n");
