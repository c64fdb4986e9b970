"""CI's skip check (.ci/check_skips.py): a skip the allow-list does not expect, or a step with no test, fails."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKER = ROOT / ".ci" / "check_skips.py"


def _case(classname: str, name: str, inner: str = "") -> str:
    """One junit testcase element."""
    return f'<testcase classname="{classname}" name="{name}" time="0.001">{inner}</testcase>'


def _skip(message: str, kind: str = "pytest.skip") -> str:
    """A junit skipped element."""
    return f'<skipped type="{kind}" message="{message}">tests/x.py:3: {message}</skipped>'


def _report(tmp_path: pathlib.Path, *cases: str) -> pathlib.Path:
    """A junit xml report (pytest's xunit2 layout) holding `cases`."""
    path = tmp_path / "report.xml"
    path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
                    f'<testsuite name="pytest" tests="{len(cases)}">{"".join(cases)}</testsuite></testsuites>')
    return path


def _check(report: pathlib.Path, allow: str) -> subprocess.CompletedProcess:
    """Run the checker on `report` with an allow-list of text `allow`."""
    allow_path = report.with_name("allow.txt")
    allow_path.write_text(allow)
    return subprocess.run([sys.executable, str(CHECKER), str(report), "--allow", str(allow_path)],
                          capture_output=True, text=True, timeout=60)


def test_an_unexpected_skip_fails_and_is_named(tmp_path):
    report = _report(tmp_path, _case("tests.test_a", "test_ok"),
                     _case("tests.test_a", "test_needs_torch[zip]", _skip("torch is not installed")))
    proc = _check(report, "# nothing expected\n")
    assert proc.returncode == 1
    assert "unexpected skip: tests/test_a.py::test_needs_torch[zip]: torch is not installed" in proc.stdout


def test_an_allowed_skip_and_an_xfail_pass(tmp_path):
    report = _report(tmp_path, _case("tests.test_a", "test_ok"),
                     _case("tests.test_a.TestGpu", "test_kernel[f32]", _skip("no GPU")),
                     _case("tests.test_b", "test_known", _skip("known bug", kind="pytest.xfail")))
    proc = _check(report, "tests/test_a.py::TestGpu::test_kernel[*] | CI has no GPU\n")
    assert proc.returncode == 0, proc.stdout
    assert "3 tests, 1 skipped, 1 of them expected" in proc.stdout


def test_a_report_without_tests_fails(tmp_path):
    proc = _check(_report(tmp_path), "")
    assert proc.returncode == 1 and "holds no test" in proc.stdout


def test_a_module_skipped_at_collection_is_named_by_its_path(tmp_path):
    collected = '<skipped message="collection skipped">(\'/r/tests/test_t.py\', 14, \'Skipped: no torch\')</skipped>'
    proc = _check(_report(tmp_path, _case("", "tests.test_t", collected)), "")
    assert proc.returncode == 1 and "unexpected skip: tests/test_t.py: no torch" in proc.stdout


def test_a_missing_report_or_an_entry_without_reason_is_an_input_error(tmp_path):
    assert _check(tmp_path / "absent.xml", "").returncode == 2
    proc = _check(_report(tmp_path, _case("tests.test_a", "test_ok")), "tests/test_a.py::test_ok\n")
    assert proc.returncode == 2 and "PATTERN | REASON" in proc.stderr


def test_ci_allow_list_parses_and_a_real_pytest_report_is_read(tmp_path):
    """The repository's allow-list is valid, and this pytest's own junit output names each skipped test."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_t.py").write_text("import pytest\n\ndef test_ok():\n    pass\n\n"
                                                "def test_skips():\n    pytest.skip('why not')\n")
    (tmp_path / "sub" / "test_m.py").write_text("import pytest\n\n"
                                                "pytest.importorskip('no_such_module_x', reason='absent')\n")
    report = tmp_path / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "sub"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    proc = subprocess.run([sys.executable, str(CHECKER), str(report)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unexpected skip: sub/test_t.py::test_skips: why not" in proc.stdout
    assert "unexpected skip: sub/test_m.py: absent" in proc.stdout
