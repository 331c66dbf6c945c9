"""The benchmark scripts' ratio spread (issue 32): each pair's ratio, then min, median and max over the pairs, so
a lucky pair shows as a wide spread instead of becoming the headline. Tiny inputs: no benchmark is run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "scripts" / "benchmarks"


def _script(name: str) -> ModuleType:
    """scripts/benchmarks/NAME.py as a module (scripts/ is not a package; bench_scale imports benchmark)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_spread_is_over_the_per_pair_ratios_not_the_ratio_of_medians() -> None:
    benchmark = _script("benchmark")
    # Pair 2 is the lucky one: its gensim run was slow. Medians alone (sgns 3.0, gensim 1.0) would say 3.0x.
    spread = benchmark.ratio_spread([3.0, 3.3, 2.8], [1.0, 0.6, 1.0])
    assert spread == {"min": pytest.approx(2.8), "median": pytest.approx(3.0), "max": pytest.approx(5.5),
                      "pairs": 3}
    assert benchmark.describe_spread(spread) == "median 3.00x (min 2.80x, max 5.50x; 3 pairs)"
    even = benchmark.ratio_spread([4.0, 2.0], [1.0, 1.0])  # an even number of pairs: the middle two's mean
    assert even["median"] == pytest.approx(3.0) and even["pairs"] == 2
    one = benchmark.describe_spread(benchmark.ratio_spread([2.0], [1.0]))
    assert one == "median 2.00x (min 2.00x, max 2.00x; 1 pair)"


@pytest.mark.parametrize("numerators, denominators", [([1.0, 2.0], [1.0]), ([], [])])
def test_pairs_need_one_run_on_each_side(numerators, denominators) -> None:
    with pytest.raises(ValueError, match="pairs need as many runs on each side"):
        _script("benchmark").ratio_spread(numerators, denominators)


def test_bench_scale_reports_the_spread_of_its_pairs() -> None:
    bench_scale = _script("bench_scale")
    assert bench_scale.describe_spread(bench_scale.ratio_spread([30.0, 20.0, 25.0], [10.0, 10.0, 10.0])) == \
        "median 2.50x (min 2.00x, max 3.00x; 3 pairs)"


def test_the_flat_generator_is_issue_32s_second_corpus(tmp_path: Path) -> None:
    bench_scale = _script("bench_scale")
    law = bench_scale.GENERATORS["flat"]
    assert (law.exponent, law.types) == (1.05, 3_900_000)
    path = bench_scale.zipf_corpus(20_000, 1000, 1, tmp_path, "flat")
    assert path.name == "flat-20000-1000-1.txt"
    lines = path.read_text().splitlines()
    assert sum(len(line.split()) for line in lines) == 20_000
    low, high = law.line_words
    assert all(low <= len(line.split()) < high for line in lines[:-1])  # the last line ends with the words
    assert 18 <= 20_000 / len(lines) <= 22  # ~20 words a line
    assert bench_scale.zipf_corpus(20_000, 1000, 1, tmp_path, "zipf").name == "zipf-20000-1000-1.txt"
