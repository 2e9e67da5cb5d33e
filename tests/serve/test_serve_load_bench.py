"""benchmarks/serve_load.py runs end to end on the tiny pair, drops nothing, writes its result."""

from __future__ import annotations

import json


def test_load_benchmark_quick(no_network, tmp_path):
    from benchmarks import serve_load

    assert serve_load.main(["--quick", "--threads", "1", "--requests", "8", "--max-tokens", "4",
                            "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "serve_load.quick.json").read_text())
    assert [lv["clients"] for lv in data["data"]["levels"]] == [1, 4, 8]
    for lv in data["data"]["levels"]:
        assert lv["requests"] == lv["ok"] == 8 and lv["dropped"] == 0
        assert 0 < lv["p50_s"] <= lv["p95_s"] and lv["rps"] > 0
    assert data["table"].count("|") > 20
