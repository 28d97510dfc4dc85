"""Result pages: each benchmark and protocol writes docs/benchmarks/NAME.json and the page NAME.md from it.

    from pages import result_page
    with result_page("md_speed", "MD speed: openmlff's paths against the model's floor"):
        ...  # everything the script prints is also recorded

The JSON holds the date, processor, cores, versions, the command and what the script printed; the page is
rendered from it (`python benchmarks/pages.py NAME` renders it again). Measurements written by hand before
the scripts wrote pages sit below the page's EARLIER marker and are kept as they are, so re-measuring never
edits the README or loses the history.
A script that fails writes no page.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "benchmarks"
EARLIER = "<!-- earlier measurements below: kept as written -->"


def processor() -> str:
    """The processor as /proc/cpuinfo names it (platform.processor() elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("openmlff", "torch", "openmm"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


class _Tee(io.TextIOBase):
    def __init__(self, stream) -> None:
        self.stream, self.text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def result_page(name: str, title: str, markdown: bool = False, enabled: bool = True):
    """Record what the block prints; when it ends without an error, write NAME.json and render NAME.md.
    markdown: the script prints Markdown (kept as it is); else its Markdown tables stay tables and the
    rest goes in code blocks. enabled False: the block runs, nothing is recorded (a user's run of the
    quick start leaves the repository's pages alone)."""
    if not enabled:
        yield sys.stdout
        return
    tee = _Tee(sys.stdout)
    started = datetime.datetime.now()
    with contextlib.redirect_stdout(tee):
        yield tee
    print(f"wrote {write_result(name, title, tee.text.getvalue(), markdown, started)}")


def write_result(name: str, title: str, output: str, markdown: bool = False, started=None) -> Path:
    """NAME.json (date, processor, cores, versions, this command, `output`) and the page NAME.md from it: for a
    script whose page is a summary it writes at its end, not all it printed (protocols/six_models.py)."""
    now = datetime.datetime.now()
    record = {"name": name, "title": title, "date": (started or now).isoformat(timespec="minutes"),
              "wall_s": None if started is None else round((now - started).total_seconds(), 1),
              "processor": processor(),
              "cores": os.cpu_count(), "versions": _versions(),
              "command": " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
              "markdown": markdown, "output": output}
    PAGES.mkdir(parents=True, exist_ok=True)
    (PAGES / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return render(name)


def _body(output: str) -> list[str]:
    """Printed Markdown tables as tables, every other run of lines in a code block."""
    lines, block, out = output.rstrip().splitlines(), [], []

    def close():
        if block:
            out.extend(["```", *block, "```", ""])
            block.clear()
    for line in lines:
        if line.startswith("|"):
            close()
            out.append(line)
        else:
            if out and out[-1].startswith("|"):
                out.append("")
            if line.strip() or block:
                block.append(line)
    close()
    return out


def render(name: str) -> Path:
    """NAME.md from NAME.json, with the earlier measurements of the existing page kept below EARLIER."""
    record = json.loads((PAGES / f"{name}.json").read_text())
    page = PAGES / f"{name}.md"
    earlier = ""
    if page.exists() and EARLIER in page.read_text():
        earlier = page.read_text().split(EARLIER, 1)[1]
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    lines = [f"# {record['title']}", "",
             f"Written by `benchmarks/pages.py` from `{name}.json`: {record['date']}, {record['processor']}, "
             f"{record['cores']} cores, {versions}"
             + ("." if record["wall_s"] is None else f"; {record['wall_s']:.0f} s."), "",
             f"    {record['command']}", "",
             *(record["output"].rstrip().splitlines() if record.get("markdown") else _body(record["output"]))]
    text = "\n".join(lines).rstrip() + "\n"
    if earlier:
        text += "\n" + EARLIER + earlier
    page.write_text(text)
    return page


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(render(argument))
