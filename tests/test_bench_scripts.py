"""Every command under bench/ still imports: a script whose imports rotted (a moved function) fails here, not on
the device machine."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))


def test_every_bench_script_imports_without_running():
    code = ("import importlib, sys\n"
            f"sys.path[:0] = [{str(ROOT / 'bench')!r}, {str(ROOT)!r}]\n"
            f"for name in {SCRIPTS!r}:\n"
            "    module = importlib.import_module(name)\n"
            "    assert callable(getattr(module, 'main', None)), name\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(SCRIPTS) > 20


def test_preset_variants_are_typed_as_the_preset_and_unknown_fields_refused():
    code = ("import sys\n"
            f"sys.path[:0] = [{str(ROOT / 'bench')!r}, {str(ROOT)!r}]\n"
            "from preset_ablation import parse_variant\n"
            "assert parse_variant('base') == ('base', {})\n"
            "assert parse_variant('r:refine_width=6+lam=0.01+optimizer=adam') == "
            "('r', {'refine_width': 6, 'lam': 0.01, 'optimizer': 'adam'})\n"
            "for bad in ('x:widht=3', 'x:quality=2'):\n"
            "    try:\n"
            "        parse_variant(bad)\n"
            "    except SystemExit as e:\n"
            "        assert 'not a preset field' in str(e)\n"
            "    else:\n"
            "        raise AssertionError(bad)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
