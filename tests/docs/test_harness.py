"""The sample runner itself: it reads pages as documented and fails when a sample fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from .samples import SampleError, logical_lines, parse_blocks, run_page, split_commands


def write_page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text)
    return page


def no_database() -> str:
    raise AssertionError("no PostgreSQL URL in this page")


def test_blocks_marks_and_lines(tmp_path: Path) -> None:
    page = write_page(
        tmp_path,
        "# T\n\n```python\nprint(1)\n```\n\n<!-- sample: skip a fragment -->\n"
        "```python\nx.\n```\n\n- item\n\n  ```bash\n  curl -s http://127.0.0.1:8080/\n  ```\n"
        "```json\n{}\n```\n",
    )
    blocks = parse_blocks(page)
    assert [(b.line, b.lang, b.skip_reason) for b in blocks] == [
        (3, "python", None),
        (8, "python", "a fragment"),
        (14, "bash", None),
        (17, "json", None),
    ]
    assert blocks[2].code == "curl -s http://127.0.0.1:8080/\n"


@pytest.mark.parametrize("mark", ["<!-- sample: skip -->", "<!-- sample: server -->"])
def test_a_mark_needs_skip_and_a_reason(tmp_path: Path, mark: str) -> None:
    page = write_page(tmp_path, f"{mark}\n```python\nprint(1)\n```\n")
    with pytest.raises(SampleError, match="only mark"):
        parse_blocks(page)


def test_shell_lines() -> None:
    code = (
        "# a comment\nagentfield-asgi serve --port 8080 &  # background\n"
        "A=1 B='two words' uvicorn m:app \\\n  --port 8001 &\n"
        "curl -s 'http://127.0.0.1:8080/ui/#scope=x' && echo ok\n"
    )
    lines = logical_lines(code)
    assert lines == [
        "agentfield-asgi serve --port 8080 &",
        "A=1 B='two words' uvicorn m:app    --port 8001 &",
        "curl -s 'http://127.0.0.1:8080/ui/#scope=x' && echo ok",
    ]
    uvicorn = split_commands(lines[1])[0]
    assert (uvicorn.assignments, uvicorn.argv, uvicorn.background) == (
        {"A": "1", "B": "two words"},
        ["uvicorn", "m:app", "--port", "8001"],
        True,
    )
    assert [c.argv for c in split_commands(lines[2])] == [
        ["curl", "-s", "http://127.0.0.1:8080/ui/#scope=x"],
        ["echo", "ok"],
    ]


def test_ports_and_databases_are_localized(tmp_path: Path) -> None:
    from .samples import PageRun

    urls = iter(["postgresql://postgres@127.0.0.1:5999/t_1"])
    run = PageRun(write_page(tmp_path, ""), tmp_path, lambda: next(urls))
    text = run.localize(
        "serve --port 8080 --database-url postgresql://app:pw@db:5432/memory\n"
        "curl http://127.0.0.1:8080/x http://localhost:8001/ postgresql://app:pw@db:5432/memory"
    )
    port, other = run.ports["8080"], run.ports["8001"]
    assert port != other
    assert text == (
        f"serve --port {port} --database-url postgresql://postgres@127.0.0.1:5999/t_1\n"
        f"curl http://127.0.0.1:{port}/x http://localhost:{other}/ "
        "postgresql://postgres@127.0.0.1:5999/t_1"
    )


def test_a_failing_python_sample_fails(tmp_path: Path) -> None:
    page = write_page(
        tmp_path, "```python\nprint('ok')\n```\n```python\nraise SystemExit(3)\n```\n"
    )
    with pytest.raises(SampleError, match=r"page.md:4: python .* exited 3"):
        run_page(page, tmp_path / "work", no_database)


def test_an_unknown_command_fails(tmp_path: Path) -> None:
    page = write_page(tmp_path, "```bash\nrm -rf build\n```\n")
    with pytest.raises(SampleError, match="`rm` is not a command the docs test runs"):
        run_page(page, tmp_path / "work", no_database)


def test_curl_against_a_started_server(tmp_path: Path) -> None:
    """Port 8080 gets a real server; an error status fails the sample, a good one passes;
    a file saved by one block is importable by the next."""
    ok = write_page(
        tmp_path,
        "```python\n# helper_mod.py\nVALUE = 7\n```\n"
        "```python\nimport helper_mod\nassert helper_mod.VALUE == 7\n```\n"
        "```bash\ncurl -s -X POST http://127.0.0.1:8080/api/v1/memory/set \\\n"
        '  -H \'Content-Type: application/json\' -d \'{"key": "k", "data": 1}\'\n```\n',
    )
    run = run_page(ok, tmp_path / "ok", no_database)
    assert run.ran == 3
    missing = write_page(
        tmp_path,
        "```bash\ncurl -s -X POST http://127.0.0.1:8080/api/v1/memory/get"
        ' -d \'{"key": "nope"}\'\n```\n',
    )
    with pytest.raises(SampleError, match="answered HTTP 404"):
        run_page(missing, tmp_path / "missing", no_database)


def test_printed_output_is_checked(tmp_path: Path) -> None:
    sample = "```python\nprint('hello')\n```\n\nIt prints:\n\n```text\n{}\n```\n"
    run = run_page(write_page(tmp_path, sample.format("hello")), tmp_path / "same", no_database)
    assert run.ran == 1
    with pytest.raises(SampleError, match=r"printed 'hello\\n', page.md:7 says 'goodbye\\n'"):
        run_page(write_page(tmp_path, sample.format("goodbye")), tmp_path / "other", no_database)


def test_a_page_without_samples(tmp_path: Path) -> None:
    assert run_page(write_page(tmp_path, "# Only prose\n"), tmp_path / "w", no_database).ran == 0
