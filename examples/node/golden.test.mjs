// node --test: every model version in TABSERVE_MODELS (default ../../models) reproduces its golden vectors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { checkModel } from "./golden.mjs";

const repository = path.resolve(process.env.TABSERVE_MODELS ?? "../../models");
const versions = readdirSync(repository)
  .filter((name) => !name.startsWith(".") && statSync(path.join(repository, name)).isDirectory())
  .flatMap((name) => readdirSync(path.join(repository, name)).filter((v) => /^\d+$/.test(v)).map((v) => path.join(repository, name, v)));

test("the repository has models to check", () => assert.ok(versions.length > 0, `no model under ${repository}`));

for (const folder of versions) {
  test(`${path.relative(repository, folder)} matches scikit-learn's golden outputs`, async () => {
    const { rows, problems } = await checkModel(folder);
    assert.ok(rows > 0);
    assert.deepEqual(problems, []);
  });
}
