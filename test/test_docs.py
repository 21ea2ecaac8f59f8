"""The documentation cannot rot: it builds with warnings as errors, and every snippet runs.

* ``python``/``py`` code blocks of each page in ``docs/`` run in order, in one
  namespace per page (like a notebook), in a temporary working directory;
  ``pycon`` blocks (``>>>`` sessions) run as doctests.
* ``bash``/``console``/``shell`` blocks are checked command by command: extras
  named in ``pip install -e ".[...]"`` exist in ``pyproject.toml``, scripts exist
  and accept the flags given (statically here; by running ``--help`` in the slow
  test), test paths exist. A command this file does not know fails the test.
* ``text`` and other languages are output or data and are not run.
* Docstring examples (``>>>``) of every module of the package run as doctests.
* Every public name (``__all__``) of every subpackage has an entry in
  ``docs/api/<subpackage>.rst``.
"""
import doctest
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

import torch_geometric_erwin

from support import ROOT

DOCS = os.path.join(ROOT, "docs")
SKIP_DIRS = ("_build", "_generated")


def pages():
    found = []
    for folder, subfolders, files in os.walk(DOCS):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIP_DIRS and not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), DOCS) for f in sorted(files)
                  if f.endswith((".md", ".rst"))]
    return found


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")
RST_BLOCK = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<info>\S+)\s*$")


def code_blocks(page):
    """``(language, first_line, code)`` of every code block of a Markdown or rst page."""
    with open(os.path.join(DOCS, page), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    blocks, number = [], 0
    while number < len(lines):
        match = (RST_BLOCK if page.endswith(".rst") else FENCE).match(lines[number])
        number += 1
        if not match:
            continue
        info = match["info"].strip()
        language = info.split()[-1].lower() if info.startswith("{code-block}") else (info.split() or [""])[0]
        start, body = number, []
        if page.endswith(".rst"):
            while number < len(lines) and (not lines[number].strip() or
                                           len(lines[number]) - len(lines[number].lstrip()) > len(match["indent"])):
                body.append(lines[number])
                number += 1
        else:
            closing = re.compile(rf"^ *{re.escape(match['fence'][0])}{{{len(match['fence'])},}}\s*$")
            while number < len(lines) and not closing.match(lines[number]):
                body.append(lines[number])
                number += 1
            number += 1
        code = "\n".join(body)
        if not language.startswith("{") or info.startswith("{code-block}"):
            blocks.append((language.lower(), start + 1, _dedent(code)))
    return blocks


def _dedent(code):
    import textwrap

    return textwrap.dedent(code).strip("\n")


PYTHON, PYCON, SHELL = ("python", "py", "python3"), ("pycon",), ("bash", "console", "shell", "sh")


def pages_with(languages):
    return [page for page in pages() if any(lang in languages for lang, _, _ in code_blocks(page))]


@pytest.mark.parametrize("page", pages_with(PYTHON + PYCON))
def test_python_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for language, line, code in code_blocks(page):
        if language in PYTHON:
            exec(compile(code, f"docs/{page}:{line}", "exec"), namespace)
        elif language in PYCON:
            test = doctest.DocTestParser().get_doctest(code, namespace, page, f"docs/{page}", line)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            runner.run(test)
            assert runner.failures == 0, f"doctest failed in docs/{page}:{line}"


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def requirement_names():
    project = pyproject()
    names = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        names += extra
    # torch-cluster is optional by design (lazy import with a built-in fallback), never an extra.
    return {re.split(r"[<>=!~\[; ]", name)[0].lower() for name in names} | {"torch-cluster"}


def commands(code):
    """Shell commands of a block: prompts dropped, continuations joined, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        for command in line.split("&&"):
            yield shlex.split(command, comments=True)


def script_flags(words):
    return [word.split("=")[0] for word in words if word.startswith("--")]


def check_script(script, flags, problems):
    path = os.path.join(ROOT, script)
    if not os.path.isfile(path):
        problems.append(f"{script} does not exist")
        return
    sources = [path] + [os.path.join(folder, name)
                        for folder in (os.path.dirname(path), os.path.join(ROOT, "torch_geometric_erwin", "training"))
                        if os.path.isdir(folder) for name in os.listdir(folder) if name.endswith(".py")]
    text = "".join(open(source, encoding="utf-8").read() for source in sources)
    problems += [f"{script} has no option {flag}" for flag in flags
                 if flag != "--help" and f'"{flag}"' not in text and f"'{flag}'" not in text]


def check_command(words, problems, scripts):
    if not words:
        return
    program, rest = words[0], words[1:]
    if program in (".", "source") or program.startswith("python") and rest[:2] == ["-m", "venv"]:
        return
    if program == "pip" and rest[:1] == ["install"]:
        for word in rest[1:]:
            if word in ("-e", "-U", "--upgrade") or word.startswith("-"):
                continue
            extras = re.fullmatch(r"\.\[(?P<extras>[\w,-]+)\]", word)
            if extras:
                known = set(pyproject()["optional-dependencies"])
                problems += [f"pip extra [{e}] is not in pyproject.toml" for e in extras["extras"].split(",")
                             if e not in known]
            elif word.startswith("torch=="):
                import torch

                if not torch.__version__.startswith(word.split("==")[1]):
                    problems.append(f"docs pin {word} but the tests run torch {torch.__version__}")
            elif word != "." and re.split(r"[<>=!~\[]", word)[0].lower() not in requirement_names():
                problems.append(f"pip install {word}: not a dependency or extra of the package")
        return
    if program.startswith("python") and rest[:2] == ["-m", "pytest"]:
        problems += [f"test path {w} does not exist" for w in rest[2:]
                     if w.startswith("test/") and not os.path.exists(os.path.join(ROOT, w.split("::")[0]))]
        return
    if program == "sphinx-build":
        return  # test_docs_build runs it
    if program == "torchrun":  # torchrun [its options] SCRIPT [script options]
        rest = next((rest[i:] for i, word in enumerate(rest) if word.endswith(".py")), [])
        program = "python" if rest else program
    if program.startswith("python") and rest and rest[0].endswith(".py"):
        check_script(rest[0], script_flags(rest[1:]), problems)
        scripts.setdefault(rest[0], set()).update(script_flags(rest[1:]))
        return
    problems.append(f"test_docs.py does not know how to check the command {' '.join(words)!r}")


def shell_commands_of(page):
    problems, scripts = [], {}
    for language, line, code in code_blocks(page):
        if language in SHELL:
            for words in commands(code):
                before = len(problems)
                check_command(words, problems, scripts)
                problems[before:] = [f"docs/{page}:{line}: {p}" for p in problems[before:]]
    return problems, scripts


@pytest.mark.parametrize("page", pages_with(SHELL))
def test_shell_snippets_refer_to_what_exists(page):
    problems, _ = shell_commands_of(page)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_documented_script_flags_are_accepted():
    scripts = {}
    for page in pages_with(SHELL):
        scripts.update(shell_commands_of(page)[1])
    for script, flags in scripts.items():
        result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
        missing = [flag for flag in flags if flag not in result.stdout]
        assert not missing, f"{script} --help does not list {missing}"


def package_modules():
    names = []
    for module in pkgutil.walk_packages(torch_geometric_erwin.__path__, "torch_geometric_erwin."):
        if not module.name.rsplit(".", 1)[-1].startswith("_"):
            names.append(module.name)
    return sorted(names)


@pytest.mark.parametrize("name", package_modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        if test.examples and test.name.startswith(name):
            runner.run(test)
    assert runner.failures == 0


def public_subpackages():
    return sorted(m.name for m in pkgutil.iter_modules(torch_geometric_erwin.__path__)
                  if m.ispkg and not m.name.startswith("_"))


@pytest.mark.parametrize("subpackage", public_subpackages())
def test_every_public_name_is_in_the_api_reference(subpackage):
    module = importlib.import_module(f"torch_geometric_erwin.{subpackage}")
    page = os.path.join(DOCS, "api", f"{subpackage}.rst")
    assert os.path.isfile(page), f"docs/api/{subpackage}.rst is missing"
    text = open(page, encoding="utf-8").read()
    documented = set(re.findall(rf"^\.\. auto\w+:: torch_geometric_erwin\.{subpackage}\.(\w+)", text, re.M))
    missing = set(getattr(module, "__all__", [])) - documented
    assert not missing, f"docs/api/{subpackage}.rst does not document {sorted(missing)}"
    assert f"api/{subpackage}" in open(os.path.join(DOCS, "index.md"), encoding="utf-8").read()


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="building the docs needs sphinx (pip install -e '.[docs]')")
    pytest.importorskip("myst_parser", reason="building the docs needs myst-parser (pip install -e '.[docs]')")
    pytest.importorskip("matplotlib", reason="the docs' figures need matplotlib (pip install -e '.[docs]')")
    html = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), DOCS, str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    for page in pages():
        assert (html / page.rsplit(".", 1)[0]).with_suffix(".html").is_file(), page
    images = {path.name for path in (html / "_images").iterdir()}
    assert {"tree_levels.png", "tree_rotated.png", "tree_coarsening.png", "padding_pow2.png",
            "padding_compact.png", "tree_3d.png"} <= images
    api = (html / "api" / "tree.html").read_text(encoding="utf-8")
    assert "build_ball_tree" in api and "Parameters" in api  # autodoc ran on the docstrings


def test_readme_picture_is_the_models_current_tree():
    """The README's committed picture records a digest of the tree it shows; the preset model builds the
    same tree today (else: python docs/figures.py --readme)."""
    pytest.importorskip("matplotlib", reason="the picture is drawn with matplotlib")
    from PIL import Image

    spec = importlib.util.spec_from_file_location("erwin_docs_figures", os.path.join(DOCS, "figures.py"))
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert f"]({figures.README_FIGURE})" in readme
    with Image.open(os.path.join(ROOT, figures.README_FIGURE)) as image:
        recorded = image.info.get(figures.DIGEST_KEY)
    pos, tree = figures.readme_tree()
    assert recorded == figures.readme_tree_digest(tree), \
        "the README's picture is stale: python docs/figures.py --readme"
    assert len(tree.rotated) == 5 and tuple(tree.ball_sizes) == (256, 256, 256, 128, 128)


def test_benchmark_page_states_the_main_jobs_parameter_counts():
    """docs/benchmarks.md gives the parameter counts of examples/nbody.py's models as they are built today."""
    import argparse

    spec = importlib.util.spec_from_file_location("example_nbody", os.path.join(ROOT, "examples", "nbody.py"))
    nbody = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nbody)
    experiment = nbody.EXPERIMENT
    counts = {}
    for model in ("erwin", "mpnn"):
        task = nbody.build_task(lambda c_in: experiment.backbones[model](c_in, "small", experiment),
                                argparse.Namespace())
        counts[model] = sum(p.numel() for p in task.parameters() if p.requires_grad)
    text = " ".join(open(os.path.join(DOCS, "benchmarks.md"), encoding="utf-8").read().split())
    assert f"have {counts['erwin']:,} (Erwin) and {counts['mpnn']:,} (MPNN) parameters" in text
