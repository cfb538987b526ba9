"""Every requirement ID the repository cites (CM-19, CFG-15, …) is defined in docs/requirements.md."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ID = re.compile(r"\b(?:CM|CFG|RES|CLI|STU|INF|LA|MEAS|CAMP|PARAM|PREC)-\d{2}\b")
CITING = ["llem_ray", "docs", "configs", "tests", "benchmarks", "README.md", "cluster.yaml"]


def _cited() -> dict[str, str]:
    found: dict[str, str] = {}
    for top in CITING:
        path = ROOT / top
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in {".py", ".md", ".yaml"}]
        for file in files:
            if file.name == "requirements.md":
                continue
            for match in ID.findall(file.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(match, str(file.relative_to(ROOT)))
    return found


def test_every_cited_requirement_id_is_defined():
    defined = set(re.findall(r"^\| ((?:[A-Z]+)-\d{2}) \|", (ROOT / "docs" / "requirements.md").read_text(), re.M))
    cited = _cited()
    assert len(cited) > 50  # the scan found the code's labels
    missing = {k: v for k, v in cited.items() if k not in defined}
    assert not missing, f"cited but not in docs/requirements.md: {missing}"
