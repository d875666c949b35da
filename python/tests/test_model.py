"""kvscope.load, tokenize, decode, generate and perplexity against the command line and
against numbers recomputed here; errors as Python exceptions; memory over repeated loads."""

import gc
import os
import shutil
import threading
import time

import numpy as np
import pytest

import kvscope
from conftest import AUSTEN, EMMA, ROOT, STORIES, TINY, VALID, cli, story


@pytest.mark.parametrize("model", [STORIES, TINY], ids=["llama2c", "hf"])
def test_tokenize_equals_the_command_line(model):
    m = kvscope.load(model)
    text = story(300)
    want = [int(x) for x in cli("tokenize", "--model", model, "--prompt", text).split()]
    assert m.tokenize(text) == want
    assert m.tokenize(text, bos=False) == want[1:]            # both models' rule: BOS first
    assert m.tokenize(text, bos=True) == want
    assert m.decode(m.tokenize(text, bos=False)) == text


def test_generate_equals_the_command_line():
    m = kvscope.load(STORIES, threads=1)
    prompt = "Once upon a time"
    want = cli("generate", "-m", STORIES, "-p", prompt, "-n", 40, "--no-echo", "-q",
               "--threads", 1)
    assert m.generate(prompt, max_tokens=40) + "\n" == want
    sampled = cli("generate", "-m", STORIES, "-p", prompt, "-n", 30, "-t", 0.8, "--seed", 7,
                  "--no-echo", "-q")
    assert m.generate(prompt, 30, temperature=0.8, seed=7) + "\n" == sampled


def test_perplexity_equals_nll_recomputed_from_the_logits():
    m = kvscope.load(STORIES, threads=1)
    text = story(600)
    ids = m.tokenize(text)
    assert len(ids) <= m.config["max_seq_len"]
    logits, _ = m.run_with_cache(ids, names=())
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = -np.mean([logp[t - 1, ids[t]] for t in range(1, len(ids))])
    r = m.perplexity(text, window=len(ids))
    assert r["tokens_scored"] == len(ids) - 1 and r["windows"] == 1
    assert r["mean_nll"] == pytest.approx(nll, rel=1e-9)
    assert r["perplexity"] == pytest.approx(np.exp(nll), rel=1e-9)


def test_config_describes_the_model():
    c = kvscope.load(TINY).config
    assert (c["n_layers"], c["n_heads"], c["n_kv_heads"], c["dim"]) == (2, 8, 4, 128)
    assert c["vocab_size"] == 2048 and c["max_seq_len"] == 512
    assert c["format"] == "hf-safetensors" and c["tied_embeddings"] is True


def test_errors_are_python_exceptions_with_the_cli_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/model.bin"):
        kvscope.load("nowhere/model.bin")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(STORIES.read_bytes()[:5000])
    shutil.copy(STORIES.parent / "tok512.bin", tmp_path / "tok512.bin")
    with pytest.raises(ValueError, match="cut.bin"):
        kvscope.load(cut)
    m = kvscope.load(STORIES)
    with pytest.raises(ValueError, match="id 512, outside the vocabulary"):
        m.run_with_cache([1, 512])
    with pytest.raises(ValueError, match="id -1"):
        m.decode([5, -1])
    with pytest.raises(TypeError, match="integer token ids"):
        m.run_with_cache([1.0, 2.5])
    with pytest.raises(ValueError, match="1-D"):
        m.run_with_cache([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="empty"):
        m.run_with_cache([])
    with pytest.raises(ValueError, match="exceed the context of 512"):
        m.run_with_cache([1] * 513)
    with pytest.raises(ValueError, match="unknown tensor 'keys'"):
        m.run_with_cache([1, 2], names=["keys"])
    with pytest.raises(ValueError, match="layers\\[0\\] is 5"):
        m.run_with_cache([1, 2], layers=[5])
    with pytest.raises(ValueError, match="max_pattern_bytes"):
        m.run_with_cache([1] * 64, names=["pattern"], max_pattern_bytes=1000)
    with pytest.raises(ValueError, match="temperature"):
        m.generate("x", 3, temperature=-1)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        m.generate("x", 3, temperature=float("inf"))
    with pytest.raises(ValueError, match="top_p"):
        m.generate("x", 3, top_p=0)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        kvscope.run(tmp_path / "missing.yaml", results=tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: perplexity\nname: bad\nmodels: [{path: data/models/stories260K/"
                   "stories260K.bin}]\ntexts: [{path: data/text/tinystories/"
                   "tinystories_valid_head.txt}]\nperplexity: {windw: 64}\n")
    with pytest.raises(ValueError, match="windw"):
        kvscope.run(bad, results=tmp_path)
    assert not (tmp_path / "bad").exists()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_100_loads():
    for _ in range(10):  # allocator and library warm-up
        kvscope.load(AUSTEN).run_with_cache([1, 2, 3])
    gc.collect()
    before = rss_bytes()
    for _ in range(100):
        m = kvscope.load(AUSTEN)
        m.run_with_cache([1, 2, 3])
        del m
    gc.collect()
    grown = rss_bytes() - before
    # One austen_mha8 is 4.3 MB of weights: a leak of one model per load would be 430 MB.
    assert grown < 16 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 100 loads"


def test_long_calls_release_the_gil():
    m = kvscope.load(AUSTEN, threads=1)
    text = EMMA.read_text()[:60000]
    done = threading.Event()
    ticks = 0

    def work():
        m.perplexity(text, window=256)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 50, "the main thread did not run while perplexity did"


def test_ctrl_c_stops_a_long_call_and_the_model_still_works():
    m = kvscope.load(AUSTEN, threads=1)
    text = EMMA.read_text()
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), 2))  # SIGINT
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        m.perplexity(text, window=512)
    assert time.monotonic() - t0 < 5, "the call ran on after Ctrl-C"
    timer.join()
    assert m.perplexity(story(400))["tokens_scored"] > 0


def test_run_returns_the_files_and_tables_sees_them_up_to_date(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    cfg = configs / "ppl.yaml"
    cfg.write_text((ROOT / "tests" / "data" / "smoke" / "perplexity.yaml").read_text())
    files = kvscope.run(cfg, results=tmp_path / "results")
    names = {f.name for f in files}
    assert {"manifest.json", "perplexity.csv"} <= names, names
    assert all(f.is_file() and f.parent.name == "ppl" for f in files if f.name != "manifest.json")
    listing = kvscope.tables(dry_run=True, configs=configs, results=tmp_path / "results")
    assert "0 would run, 1 up to date" in listing
    cfg.write_text(cfg.read_text().replace("max_tokens: 400", "max_tokens: 300"))
    assert "1 would run" in kvscope.tables(dry_run=True, configs=configs,
                                           results=tmp_path / "results")
