"""README.md and docs/ read once: no paragraph stands twice, every relative link leads to a file
(and heading) that exists, and docs/schema.md is what the code generates. Text only: no Ray, no torch."""

from __future__ import annotations

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
    broken = [b for path in doc_files() for b in broken_links(path)]
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
