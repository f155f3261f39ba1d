// Score a tabserve model's golden inputs with onnxruntime-node and compare with scikit-learn's outputs.
//
// What a user of any language needs (see docs/model-repository.md):
// - one input per feature, shape [N, 1]: FP32 -> Float32Array ("float32"), BYTES -> string[] ("string");
// - a missing number is NaN (null in golden.json), a missing category is "";
// - outputs: regression "variable" [N, 1]; classification "label" [N] and "probabilities" [N, C];
// - golden.json states its own tolerance: |got - want| <= atol + rtol * |want|, labels exactly.
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as ort from "onnxruntime-node";

function inputTensor({ datatype, shape, data }) {
  if (datatype === "BYTES") return new ort.Tensor("string", data.map(String), shape);
  if (datatype === "FP32") return new ort.Tensor("float32", Float32Array.from(data, (v) => (v === null ? NaN : v)), shape);
  throw new Error(`unsupported input datatype ${datatype}`);
}

export async function checkModel(folder) {
  const golden = JSON.parse(await readFile(path.join(folder, "golden.json"), "utf8"));
  const session = await ort.InferenceSession.create(path.join(folder, "model.onnx"));
  const feeds = Object.fromEntries(Object.entries(golden.inputs).map(([name, tensor]) => [name, inputTensor(tensor)]));
  const results = await session.run(feeds);
  const { atol, rtol } = golden.tolerance;
  const problems = [];
  for (const [name, expected] of Object.entries(golden.outputs)) {
    const got = Array.from(results[name].data, (v) => (typeof v === "bigint" ? Number(v) : v));
    if (JSON.stringify(results[name].dims.map(Number)) !== JSON.stringify(expected.shape)) {
      problems.push(`${name}: shape ${results[name].dims} != ${expected.shape}`);
      continue;
    }
    expected.data.forEach((want, i) => {
      const ok = expected.datatype === "BYTES" ? got[i] === want : Math.abs(got[i] - want) <= atol + rtol * Math.abs(want);
      if (!ok) problems.push(`${name}[${i}]: onnxruntime-node ${got[i]}, scikit-learn ${want}`);
    });
  }
  return { rows: golden.inputs[Object.keys(golden.inputs)[0]].shape[0], outputs: Object.keys(golden.outputs), problems };
}
