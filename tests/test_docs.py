"""README.md and docs/ read once: no paragraph stands twice, every relative link leads to a file
(and heading) that exists, and docs/schema.md is what the code generates. BENCHMARKS.md answers first
and stays small, each bench/ script names the section it backs, and no file of the repository speaks
of anything but the product (tracker numbers, work periods, internal tools, machine paths). Text only:
no Ray, no torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from conftest import REPO

from workers.schema import markdown_page, to_batch

#: Shorter paragraphs ("Default: 1.") may stand twice; longer ones are a copy to remove.
MIN_CHARS = 60
#: Runs of this many words that stand twice are copies too, even inside longer paragraphs.
RUN_WORDS = 12
#: The README stays an introduction (around 12 KB); the manual goes to docs/.
README_MAX_BYTES = 15_000
REGENERATE = f"python -m {markdown_page.__module__} > docs/schema.md"
#: BENCHMARKS.md is a results page: a new figure replaces the one it updates.
BENCHMARKS_MAX_BYTES = 40_000

#: Words that speak of how the project is run rather than of the product: a tracker's numbers, work
#: periods and who did what, internal tools, machine paths. They belong in commit messages.
NOT_PRODUCT = {
    "a tracker number": r"\bissues?\s+#?\d+|\(#\d+\)|(?:^|[\s(])#\d{1,4}\b(?![;,}])",
    "a work period": r"(?<!\ba )(?<!another )\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
                     r"|tenth|eleventh|twelfth|\d+(?:st|nd|rd|th)) session\b|\bsession \d+\b|\bwork[- ]period"
                     r"|\bthe lead\b",
    "an internal tool": r"\bfarm-(?:bench|studio)\b|\bmake-kit\b|\bdevice tool\b|\b(?:the|device) kit\b|\bkit's\b"
                        r"|`duplicates`|\bduplicates tool\b",
    "a machine path": r"/work/|/tmp/cc\d*\b|\.\./shared\b",
}
#: The product's own words and other projects' public trackers, which stay: "ONNX Runtime issues
#: 20050" names ONNX Runtime's tracker, not ours.
PROJECTS_BEFORE_ISSUE = ("ONNX Runtime", "PyTorch", "torch", "Ray", "vLLM", "TensorRT", "transformers", "Arrow")
#: This module names the words it looks for, so it is the one file the scan leaves out.
SCAN_SKIPS = {"tests/test_docs.py"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh", ".json", ".html"}


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside code fences."""
    out, fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            out.append((number, line))
    return out


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each prose paragraph, whitespace normalised: a code fence, heading,
    table row or blank line ends one; each list item is one of its own, without its marker."""
    out: list[tuple[int, str]] = []
    lines: list[str] = []
    start = 0
    last = 0

    def flush() -> None:
        if lines:
            out.append((start, " ".join(" ".join(lines).split())))
            lines.clear()

    for number, line in prose_lines(text):
        s = line.strip()
        item = re.match(r"([-*+]|\d+[.)])\s+", s)
        if number != last + 1 or not s or s.startswith(("#", "|")) or item:
            flush()
        last = number
        if not s or s.startswith(("#", "|")):
            continue
        if not lines:
            start = number
        lines.append(s[item.end():] if item else s)
    flush()
    return out


def twin_paragraphs(files: list[Path]) -> list[str]:
    """Each paragraph of at least MIN_CHARS that stands twice, with both places."""
    first: dict[str, str] = {}
    twins = []
    for path in files:
        for number, para in paragraphs(path.read_text()):
            if len(para) < MIN_CHARS:
                continue
            where = f"{path.name}:{number}"
            if para in first:
                twins.append(f"{first[para]} and {where}: {para[:80]}...")
            else:
                first[para] = where
    return twins


def repeated_word_runs(files: list[Path], n: int = RUN_WORDS) -> list[str]:
    """Each run of ``n`` words of prose that stands twice (in one paragraph or two), with both
    places: what a merge leaves behind inside a paragraph, which the paragraph check can't see."""
    first: dict[str, tuple[str, int]] = {}  # run -> (paragraph's place, word index)
    repeats: dict[tuple[str, str], str] = {}
    for path in files:
        for number, para in paragraphs(path.read_text()):
            where, words = f"{path.name}:{number}", para.split()
            for i in range(len(words) - n + 1):
                run = " ".join(words[i:i + n])
                if run not in first:
                    first[run] = (where, i)
                elif first[run][0] != where or i - first[run][1] >= n:
                    repeats.setdefault((first[run][0], where), run)
    return [f"{a} and {b}: ...{run}..." for (a, b), run in repeats.items()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings; a repeated heading's get -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for _, line in prose_lines(path.read_text()):
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return found


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` (outside code) to a missing file, or to a heading not in it."""
    broken = []
    for number, line in prose_lines(path.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.name}:{number}: ({target})"
            if not dest.exists():
                broken.append(f"{where} no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} no heading with that anchor in {dest.name}")
    return broken


def test_no_paragraph_stands_twice():
    twins = twin_paragraphs(doc_files())
    assert not twins, "paragraphs that stand twice in README.md and docs/; keep one, link to it:\n" + "\n".join(twins)


def test_twin_paragraphs_are_found_however_they_are_wrapped(tmp_path):
    para = "A trial whose worker died or that timed out is tried again, as many times as the plan says."
    (tmp_path / "a.md").write_text(f"# A\n\n{para}\n\n```sh\n{para}\n```\n| {para} |\n")
    (tmp_path / "b.md").write_text("# B\n\n- " + para.replace(" or ", "\n  or ") + "\n- short, twice\n- short, twice\n")
    assert len(twin_paragraphs([tmp_path / "a.md"])) == 0  # code blocks and table rows don't count
    twins = twin_paragraphs([tmp_path / "a.md", tmp_path / "b.md"])
    assert twins == [f"a.md:3 and b.md:3: {para[:80]}..."]


def test_no_run_of_words_stands_twice():
    repeats = repeated_word_runs(doc_files())
    assert not repeats, (f"runs of {RUN_WORDS} words that stand twice in README.md and docs/; say it once:\n"
                         + "\n".join(repeats))


def test_a_copy_inside_a_paragraph_is_found(tmp_path):
    # what a merge left in the README once: an option list pasted again into its own paragraph
    opts = "`--workers N` (at most N GPU workers; for a `device: cpu` plan, N CPU workers, default 1), `--dry-run`"
    (tmp_path / "README.md").write_text(f"Options: `--out DIR`, {opts}, `--resume DIR`.\n{opts}.\n")
    assert repeated_word_runs([tmp_path / "README.md"]) == [
        "README.md:1 and README.md:1: ...`--workers N` (at most N GPU workers; for a `device: cpu` plan,...",
    ]
    assert twin_paragraphs([tmp_path / "README.md"]) == []  # one paragraph: only the word runs see it


def test_relative_links_lead_somewhere():
    broken = [b for path in [*doc_files(), REPO / "BENCHMARKS.md"] for b in broken_links(path)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_broken_links_and_anchors_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/x.md").write_text("# X\n\n## Losing a node\n\n## Reports: `report`\n")
    (tmp_path / "README.md").write_text(
        "See [x](docs/x.md#losing-a-node), [r](docs/x.md#reports-report), [web](https://example.com/y),\n"
        "[gone](docs/gone.md), [bad anchor](docs/x.md#no-such-heading), [here](#nowhere), `[code](nope.md)`.\n"
        "```sh\n[in a fence](nope.md)\n```\n")
    assert broken_links(tmp_path / "README.md") == [
        "README.md:2: (docs/gone.md) no such file",
        "README.md:2: (docs/x.md#no-such-heading) no heading with that anchor in x.md",
        "README.md:2: (#nowhere) no heading with that anchor in README.md",
    ]


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    files = doc_files()
    linked = {(p.parent / t.partition("#")[0]).resolve()
              for p in files for _, line in prose_lines(p.read_text()) for t in re.findall(r"\]\(([^)\s#]+)", line)}
    orphans = [p.relative_to(REPO).as_posix() for p in files[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages no other page links to: {orphans}"


def test_schema_page_is_generated_from_the_code():
    # the command the page and this message name, run as a user runs it: the page is what it prints
    done = subprocess.run([sys.executable, *REGENERATE.split(">")[0].split()[1:]], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert (REPO / "docs/schema.md").read_text() == done.stdout, (
        f"docs/schema.md is not what the code generates; regenerate it: {REGENERATE}")


def test_schema_page_has_one_row_per_column():
    """One row per column a results file has, in the file's order, each with its Arrow type and a meaning."""
    rows = re.findall(r"^\| `([^`]+)` \| (.+?) \| (.*) \|$", (REPO / "docs/schema.md").read_text(), re.M)
    stored = pq.read_schema(pa.BufferReader(parquet_bytes()))  # a results file's schema, read back
    names = [name for name, _, _ in rows]
    missing = [n for n in stored.names if n not in names]
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    assert names == stored.names, f"docs/schema.md: missing {missing}, repeated {repeated}; regenerate it: {REGENERATE}"
    # (a list's item is named "element" in a Parquet file, "item" in Arrow: the page names neither)
    wrong = [(n, t) for n, t, _ in rows if t != re.sub(r"(item|element): ", "", str(stored.field(n).type))]
    assert not wrong and all(meaning.strip() for _, _, meaning in rows), wrong


def parquet_bytes() -> bytes:
    """A results file with no rows, as the sink writes its parts (``to_batch``), in memory."""
    sink = pa.BufferOutputStream()
    batch = to_batch([])
    with pq.ParquetWriter(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def test_readme_plan_is_the_quickstart_plan():
    readme = (REPO / "README.md").read_text()
    plan = re.search(r"^## A plan\n.*?```yaml\n(.*?)```", readme, re.S | re.M).group(1)
    assert yaml.safe_load(plan) == yaml.safe_load((REPO / "plans/quickstart.yaml").read_text()), (
        "README.md's annotated plan says it is plans/quickstart.yaml: make them the same again")


def test_readme_stays_an_introduction():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move the manual's parts to docs/"


def tracked_text_files(root: Path = REPO) -> list[Path]:
    """The repository's tracked text files (``git ls-files``; every file under ``root`` outside hidden
    folders and virtual environments where there is no git)."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                 and not any(part.startswith(".") or part in {"venv", "results"} for part in p.relative_to(root).parts)]
    return [root / n for n in names if n not in SCAN_SKIPS and (root / n).is_file()
            and ((root / n).suffix in TEXT_SUFFIXES or (root / n).name in {"Makefile", ".gitignore", "run"})]


def not_product_words(path: Path, root: Path = REPO) -> list[str]:
    """Each place in ``path`` that speaks of the project's running rather than of the product."""
    found = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for what, pattern in NOT_PRODUCT.items():
            for m in re.finditer(pattern, line, re.IGNORECASE):
                if what == "a tracker number" and line[:m.start()].rstrip().endswith(PROJECTS_BEFORE_ISSUE):
                    continue  # another project's public tracker
                found.append(f"{path.relative_to(root).as_posix()}:{number}: {what}: {m.group(0).strip()!r}")
    return found


def test_repo_files_speak_of_the_product_only():
    found = [f for path in tracked_text_files() for f in not_product_words(path)]
    assert not found, ("tracker numbers, work periods, internal tools or machine paths in the repository "
                       "(they belong in commit messages):\n" + "\n".join(found))


def test_words_that_are_not_the_products_are_found(tmp_path):
    issue, tool = "issue", "farm" + "-bench"
    text = (f"As {issue} 14 asked (see {issue}s 15, 16 and #7), {tool} timed it in the seventh session.\n"
            f"Measured by the lead in /{'work'}/main and /tmp/{'cc'}3; the device kit's Ray.\n"
            f"ONNX Runtime {issue}s 20050, 22583 and PyTorch {issue} 1234 are public.\n"
            "The issue lag, issue_lag_ms_p99, first issue to last completion, color:#222; a Ray session;\n"
            "ORT profiles in a second session like the timed one.\n")
    (tmp_path / "a.md").write_text(text)
    found = not_product_words(tmp_path / "a.md", tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "a tracker number: 'issue 14'", "a tracker number: 'issues 15'", "a tracker number: '#7'",
        "a work period: 'seventh session'", "an internal tool: 'farm-bench'",
        "a work period: 'the lead'", "an internal tool: 'device kit'",
        "a machine path: '/work/'", "a machine path: '/tmp/cc3'",
    ]


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, title) of each Markdown heading of ``path``, outside code."""
    return [(len(m.group(1)), m.group(2).strip()) for _, line in prose_lines(path.read_text())
            if (m := re.match(r"(#{1,6})\s+(.*)", line))]


def test_benchmarks_page_answers_first_and_stays_small():
    path = REPO / "BENCHMARKS.md"
    size = len(path.read_bytes())
    assert size <= BENCHMARKS_MAX_BYTES, (
        f"BENCHMARKS.md is {size} bytes (at most {BENCHMARKS_MAX_BYTES}): replace the figure a new one updates, "
        "and leave how it was reached to the commit message")
    sections = [title for level, title in headings(path) if level == 2]
    assert sections and sections[0] == "Answers", f"BENCHMARKS.md must open with its answers; its sections: {sections}"
    answers = path.read_text().split("\n## ", 2)[1]
    links = re.findall(r"\]\(#([^)]+)\)", answers)
    assert len(links) >= 5 and not broken_links(path), "the answers link to the sections that back them"


def test_each_bench_script_names_the_section_it_backs():
    page = (REPO / "BENCHMARKS.md").read_text()
    titles = [title for _, title in headings(REPO / "BENCHMARKS.md")]
    wrong = []
    for script in sorted((REPO / "bench").glob("*.py")):
        if script.name == "__init__.py":
            continue
        doc = (ast.get_docstring(ast.parse(script.read_text())) or "").splitlines()
        cited = re.findall(r'"([^"]+)"', doc[0]) if doc and "BENCHMARKS.md" in doc[0] else []
        if not cited:
            wrong.append(f"bench/{script.name}: its docstring's first line names no BENCHMARKS.md section")
        for title in cited:
            if not any(t.startswith(title.removesuffix("...").rstrip()) for t in titles):
                wrong.append(f"bench/{script.name}: no section {title!r} in BENCHMARKS.md")
        if f"bench/{script.name}" not in page and f"bench.{script.stem}" not in page:
            wrong.append(f"bench/{script.name}: BENCHMARKS.md does not name it; a script that backs no figure leaves")
    assert not wrong, "\n".join(wrong)
