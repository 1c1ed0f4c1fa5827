"""Text files are UTF-8 whatever the locale (Windows and C/POSIX locales).

``open()``, ``Path.read_text()`` and ``Path.write_text()`` without ``encoding=`` use
the locale's encoding: cp1252 on most Windows machines, ASCII under ``LC_ALL=C``
(Docker images, CI runners). A CharTokenizer whose vocabulary holds "漢" then cannot
be saved there, and a file saved on Linux cannot be read on Windows. Two checks:

1. a static one: every text-mode open / read_text / write_text in the course's
   Python code and notebooks names its encoding (binary modes need none);
2. a real one: in a subprocess whose preferred encoding is *not* UTF-8, save and
   load tokenizers and a checkpoint holding non-ASCII characters.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("minigpt_helpers", "benchmarks", "solutions", "tests")
# Receivers whose .open() is not a text-file open (os.open takes flags; archives have their own modes).
NOT_FILE_OPEN = {"os", "tarfile", "zipfile", "webbrowser", "Image", "shelve", "dbm", "wave"}
COMPRESSED = {"gzip", "bz2", "lzma"}  # .open(..., "rt") is text, the default "rb" is not


def _arg(call: ast.Call, pos: int, name: str) -> ast.expr | None:
    """The argument passed as keyword ``name`` or at position ``pos``, or None."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if len(call.args) > pos and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    return None


def _receiver(func: ast.Attribute) -> str:
    value = func.value
    while isinstance(value, ast.Attribute):
        value = value.value
    return value.id if isinstance(value, ast.Name) else ""


def _text_call(call: ast.Call) -> tuple[str, int | None, int, bool] | None:
    """``(name, mode position, encoding position, text by default)`` if ``call`` may open a text file, else None."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        return "open()", 1, 3, True
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr == "read_text":
        return ".read_text()", None, 0, True
    if func.attr == "write_text":
        return ".write_text()", None, 1, True
    if func.attr != "open" or _receiver(func) in NOT_FILE_OPEN:
        return None
    who = _receiver(func)
    if who == "io":
        return "io.open()", 1, 3, True
    if who in COMPRESSED:
        return f"{who}.open()", 1, 3, False
    return ".open()", 0, 2, True  # pathlib.Path.open(mode="r", buffering=-1, encoding=None)


def _is_text_mode(mode: ast.expr | None, text_default: bool) -> bool | None:
    """True for a text mode, False for a binary one, None when the mode is computed (cannot tell)."""
    if mode is None:
        return text_default
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return not ("b" in mode.value or (not text_default and "t" not in mode.value))
    return None


def _problem(call: ast.Call) -> str | None:
    """Why ``call`` reads or writes text in the locale's encoding, or None if it does not."""
    if any(kw.arg is None for kw in call.keywords):  # **kwargs: cannot tell
        return None
    found = _text_call(call)
    if found is None:
        return None
    kind, mode_pos, enc_pos, text_default = found
    enc = _arg(call, enc_pos, "encoding")
    locale_encoding = enc is None or (isinstance(enc, ast.Constant) and enc.value is None)
    text = True if mode_pos is None else _is_text_mode(_arg(call, mode_pos, "mode"), text_default)
    if text is False or not locale_encoding:  # binary, or the encoding is named
        return None
    if text is None:
        return f"{kind} with a computed mode and no encoding= (make the mode a literal or pass encoding)"
    if enc is None:
        return f"{kind} in text mode without encoding="
    return f"{kind} with encoding=None (the locale's encoding)"


def _python_source(path: Path) -> str:
    """A .py file's text, or a notebook's code cells joined (IPython magics and shell lines blanked)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return text
    cells = [c["source"] for c in json.loads(text)["cells"] if c["cell_type"] == "code"]
    lines = "\n".join("".join(c) if isinstance(c, list) else c for c in cells).splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def locale_dependent_calls(paths: list[Path]) -> list[str]:
    """``"path:line: why  (source)"`` for every text open / read_text / write_text without an encoding.

    For a notebook the line counts through its code cells, joined in order.
    """
    found = []
    for path in paths:
        source = _python_source(path)
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Call):
                why = _problem(node)
                if why:
                    code = lines[node.lineno - 1].strip()
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {why}  ({code[:90]})")
    return sorted(found)


def test_the_checker_itself():
    src = textwrap.dedent('''
        open(p)
        open(p, "w")
        open(p, "rb")
        open(p, mode="wb")
        open(p, "w", encoding="utf-8")
        open(p, "r", -1, "utf-8")
        Path(p).open()
        Path(p).open("rb")
        Path(p).open("w", encoding="utf-8")
        p.read_text()
        p.read_text("utf-8")
        p.read_text(encoding=None)
        p.write_text(s)
        p.write_text(s, "utf-8")
        p.write_text(s, encoding="utf-8")
        p.read_bytes()
        os.open(p, os.O_RDONLY)
        gzip.open(p)
        gzip.open(p, "rt")
        gzip.open(p, "rt", encoding="utf-8")
        open(p, mode)
        open(p, **kw)
    ''')
    flagged = [n.lineno - 1 for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and _problem(n)]
    assert sorted(flagged) == [1, 2, 7, 10, 12, 13, 19, 21], flagged


def test_every_text_file_access_names_its_encoding():
    paths = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py") if ".ipynb_checkpoints" not in p.parts)
    paths += sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(paths) > 20 and any(p.suffix == ".ipynb" for p in paths)
    found = locale_dependent_calls(paths)
    assert not found, (
        f"{len(found)} text-file access(es) use the locale's encoding (cp1252 on Windows, ASCII under LC_ALL=C) "
        "instead of UTF-8; add encoding=\"utf-8\":\n  " + "\n  ".join(found)
    )


# ------------------------------------------------------------------------------ in a non-UTF-8 locale
NON_ASCII = "caf\u00e9 \u2014 na\u00efve \u6f22\u5b57"  # "café — naïve 漢字": not even cp1252 has 漢

_PRELUDE = '''
import locale, sys
from pathlib import Path
enc = locale.getpreferredencoding(False)
# Guard: the test means nothing if Python fell back to UTF-8 (PEP 538 coercion / PEP 540 UTF-8 mode).
assert enc.replace("-", "").replace("_", "").lower() != "utf8" and not sys.flags.utf8_mode, enc
print("preferred encoding:", enc)
TEXT = %r * 20
out = Path(sys.argv[1])
'''

_PARTS = {
    "char": '''
from minigpt_helpers import CharTokenizer, load_tokenizer
tok = CharTokenizer.train([TEXT])
tok.save(out / "char")
back = load_tokenizer(out / "char")
assert back.chars == tok.chars and back.decode(back.encode(TEXT)) == TEXT
''',
    "bpe": '''
from minigpt_helpers import GPT4_SPLIT_PATTERN, BPETokenizer, load_tokenizer
tok = BPETokenizer.train([TEXT], vocab_size=270, pattern="\\u2014|" + GPT4_SPLIT_PATTERN)  # em dash: own chunk
tok.save(out / "bpe")
back = load_tokenizer(out / "bpe")
assert back.pattern == tok.pattern and back.encode(TEXT) == tok.encode(TEXT)
assert back.decode(back.encode(TEXT)) == TEXT
''',
    "checkpoint": '''
import torch
from minigpt_helpers import GPT, CharTokenizer, GPTConfig, load_checkpoint, save_checkpoint
tok = CharTokenizer.train([TEXT])
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, bias=False))
model.tokenizer = tok
save_checkpoint(out / "run", model, step=1)
back = load_checkpoint(out / "run", device="cpu")
assert back.tokenizer.chars == tok.chars
for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
    assert n1 == n2 and torch.equal(p1, p2), n1
''',
}


@pytest.mark.parametrize("part", sorted(_PARTS))
@pytest.mark.slow
def test_save_and_load_with_non_ascii_in_a_non_utf8_locale(part, tmp_path):
    import minigpt_helpers

    package_parent = str(Path(minigpt_helpers.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LC_") and k not in ("LANG", "LANGUAGE", "PYTHONUTF8", "PYTHONIOENCODING")}
    env.update(PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", LC_ALL="C", LANG="C", OMP_NUM_THREADS="1",
               PYTHONPATH=package_parent + os.pathsep + env.get("PYTHONPATH", ""))
    script = tmp_path / "roundtrip.py"
    script.write_text(_PRELUDE % NON_ASCII + _PARTS[part] + 'print("ok")\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, env=env, timeout=300)
    stdout, stderr = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and stdout.rstrip().endswith("ok"), (stdout + stderr)[-3000:]
