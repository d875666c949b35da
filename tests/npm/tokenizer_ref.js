// Token ids from transformers.js' tokenizers (the @lenml/tokenizers port), for
// tests/test_tokenizer_npm.cpp: an implementation independent of kvscope's.
//   node tokenizer_ref.js NODE_MODULES_DIR FAMILY TEXT_FILE...
// prints, per file, a line {"plain": [ids without special tokens], "special": [ids with them]}.
const path = require("path");
const fs = require("fs");
const [modules, family, ...files] = process.argv.slice(2);
const pkg = require(path.join(modules, "@lenml", "tokenizer-" + family));
const tok = pkg.fromPreTrained();
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const plain = Array.from(tok.encode(text, { add_special_tokens: false }));
  const special = Array.from(tok.encode(text, { add_special_tokens: true }));
  process.stdout.write(JSON.stringify({ plain, special }) + "\n");
}
